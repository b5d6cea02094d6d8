/**
 * The console's pages: server-rendered HTML, every interpolation escaped
 * (src/console/html.ts). Forms post without JavaScript; the optional script
 * only counts time down. Landmarks (header, nav, main), a skip link, labels
 * on every field, visible focus, contrast ≥ 4.5:1 (console.css), one column
 * on a phone.
 */
import type { KillSwitch } from "../containment/store";
import type {
  BudgetUse,
  ConsoleDeployment,
  Inbox,
  PlanDetail,
  RequestDetail,
  RequestSummary,
  RolloutStage,
  TimelineEvent,
} from "./backend";
import { html, type Html, safeHref } from "./html";

/** Who is looking, as the layout needs it. */
export interface Viewer {
  id: string;
  roles: string[];
  csrf: string;
  isAdmin: boolean;
}

export interface PageContext {
  deployment: ConsoleDeployment;
  viewer: Viewer | undefined;
  /** console.trace_url_template, or null. */
  traceUrlTemplate: string | null;
}

const BASE = "/console";

export function layout(ctx: PageContext, title: string, body: Html, current = ""): string {
  const v = ctx.viewer;
  const nav = v
    ? html`<nav aria-label="Console">
        <ul>
          <li>
            <a href="${BASE}/" ${current === "inbox" ? html`aria-current="page"` : ""}>Inbox</a>
          </li>
          ${
            v.isAdmin
              ? html`<li>
                  <a
                    href="${BASE}/containment"
                    ${current === "containment" ? html`aria-current="page"` : ""}
                    >Containment</a
                  >
                </li>`
              : ""
          }
        </ul>
        <form method="post" action="${BASE}/logout" class="logout">
          <input type="hidden" name="csrf" value="${v.csrf}" />
          <span class="who"
            >Signed in as
            <strong>${v.id}</strong
            >${v.roles.length > 0 ? html` (${v.roles.join(", ")})` : ""}</span
          >
          <button type="submit" class="secondary">Sign out</button>
        </form>
      </nav>`
    : "";
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · toolgate console</title>
        <link rel="stylesheet" href="${BASE}/assets/console.css" />
        <script src="${BASE}/assets/console.js" defer></script>
      </head>
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
          <p class="brand">
            <a href="${BASE}/">toolgate console</a>
            <span class="deployment">${ctx.deployment.kind}: ${ctx.deployment.name}</span>
          </p>
          ${nav}
        </header>
        <main id="main" tabindex="-1">${body}</main>
      </body>
    </html> `.value;
}

export function loginPage(
  ctx: PageContext,
  opts: {
    oidc: boolean;
    devUsers: Array<{ name: string; roles: string[] }> | undefined;
    error?: string;
    /** Where to land after login (a page of the console, checked by the caller). */
    next?: string;
  },
): string {
  const nextQuery = opts.next !== undefined ? `?next=${encodeURIComponent(opts.next)}` : "";
  const body = html`<h1>Sign in</h1>
    ${opts.error !== undefined ? html`<p class="error" role="alert">${opts.error}</p>` : ""}
    ${opts.oidc ? html`<p><a class="button" href="${BASE}/auth/start${nextQuery}">Sign in with your identity provider</a></p>` : ""}
    ${
      opts.devUsers !== undefined
        ? html`<section aria-labelledby="dev-login">
            <h2 id="dev-login">Development login</h2>
            <p class="note">
              This toolgate trusts the committed development key: anyone who reaches this page may
              act as these people. Never in production.
            </p>
            <form method="post" action="${BASE}/login/dev" class="devlogin">
              ${opts.next !== undefined ? html`<input type="hidden" name="next" value="${opts.next}" />` : ""}
              <ul class="users">
                ${opts.devUsers.map(
                  (u) =>
                    html`<li>
                      <button type="submit" name="user" value="${u.name}">${u.name}</button>
                      <span class="roles">${u.roles.join(", ") || "no roles"}</span>
                    </li>`,
                )}
              </ul>
            </form>
          </section>`
        : ""
    }
    ${
      !opts.oidc && opts.devUsers === undefined
        ? html`<p>
            No login is configured. Set <code>console.oidc.issuer</code> (OpenID Connect) to let
            approvers sign in.
          </p>`
        : ""
    }`;
  return layout(ctx, "Sign in", body);
}

function timeLeft(seconds: number | null, expiresAt: string | null): Html | string {
  if (seconds === null) return "";
  const text = seconds <= 0 ? "expired" : `${humanDuration(seconds)} left`;
  return html`<span class="left" data-expires="${expiresAt ?? ""}">${text}</span>`;
}

export function humanDuration(s: number): string {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return m > 0 ? `${h} h ${m} min` : `${h} h`;
}

const OUTCOME: Record<string, string> = {
  pending: "pending",
  approved_unused: "approved, not used yet",
  used: "approved and used",
  expired: "expired",
  revoked: "approved, then revoked",
  denied: "denied",
  cancelled: "cancelled by the agent",
  failed: "failed",
};

function reasons(r: RequestSummary): Html {
  if (r.reasons.length === 0) return html``;
  return html`<ul class="reasons">
    ${r.reasons.map(
      (x) =>
        html`<li>
          ${x.message}${x.fallback ? html` <span class="code">(${x.code})</span>` : ""}
        </li>`,
    )}
  </ul>`;
}

function justification(text: string | null): Html | string {
  if (text === null || text === "") return "";
  return html`<figure class="justification">
    <figcaption>The agent says (its own words, not checked by toolgate):</figcaption>
    <blockquote>${text}</blockquote>
  </figure>`;
}

/** A short text of a value (an argument), cut to `max` characters. */
function short(v: unknown, max = 80): string {
  const t = typeof v === "string" ? v : (JSON.stringify(v) ?? "");
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

/** A row's compact facts, when the backend gave the request in full. */
function facts(r: RequestSummary): Html | string {
  if (!("arguments" in r)) return "";
  const d = r as RequestDetail;
  const bits: string[] = [];
  if (d.tool_class !== null) bits.push(`class ${d.tool_class}`);
  if (d.stage !== null) bits.push(`stage ${d.stage}`);
  if (d.customer !== null) bits.push(`customer ${d.customer}`);
  if (d.job !== null) bits.push(`job ${d.job}`);
  if (d.stats !== null)
    bits.push(`${d.stats.requested_today} requested today, ${d.stats.approved_today} approved`);
  const args =
    d.arguments !== null && typeof d.arguments === "object" && !Array.isArray(d.arguments)
      ? Object.entries(d.arguments as Record<string, unknown>).slice(0, 6)
      : [];
  return html`${bits.length > 0 ? html`<p class="meta">${bits.join(" · ")}</p>` : ""}${
    args.length > 0
      ? html`<p class="args-inline">
          ${args.map(([k, v], i) => html`${i > 0 ? ", " : ""}<span class="arg">${k}</span> <code>${short(v)}</code>`)}
        </p>`
      : ""
  }`;
}

function row(r: RequestSummary): Html {
  return html`<li class="request" data-request-id="${r.id}">
    <p class="title">
      <a href="${BASE}/requests/${encodeURIComponent(r.id)}"
        ><strong>${r.tool}</strong> for ${r.initiator}</a
      >
      <span class="status status-${r.outcome}">${OUTCOME[r.outcome] ?? r.outcome}</span>
      ${timeLeft(r.seconds_left, r.expires_at)}
    </p>
    ${reasons(r)} ${facts(r)} ${justification(r.justification)}
    ${r.why_not !== null && r.status === "pending" ? html`<p class="whynot">You cannot decide this: ${r.why_not}.</p>` : ""}
    ${r.decided_by !== null ? html`<p class="decided">${r.status === "denied" ? "Denied" : "Decided"} by ${r.decided_by} at <time datetime="${r.decided_at ?? ""}">${r.decided_at ?? ""}</time></p>` : ""}
  </li>`;
}

function list(items: RequestSummary[], empty: string): Html {
  return items.length === 0
    ? html`<p class="empty">${empty}</p>`
    : html`<ul class="requests">
        ${items.map(row)}
      </ul>`;
}

export function inboxPage(ctx: PageContext, inbox: Inbox): string {
  const body = html`<h1>Inbox</h1>
    <section aria-labelledby="pending">
      <h2 id="pending">Waiting for your decision (${inbox.pending.length})</h2>
      ${list(inbox.pending, "Nothing waits for you.")}
    </section>
    <section aria-labelledby="readonly">
      <h2 id="readonly">Pending, not yours to decide (${inbox.readOnly.length})</h2>
      ${list(inbox.readOnly, "None.")}
    </section>
    <section aria-labelledby="decided">
      <h2 id="decided">Decided</h2>
      ${list(inbox.decided, "None yet.")}
    </section>`;
  return layout(ctx, "Inbox", body, "inbox");
}

function value(v: unknown): Html {
  if (typeof v === "string") return html`<code>${v}</code>`;
  return html`<code>${JSON.stringify(v)}</code>`;
}

function argumentsTable(args: unknown): Html {
  if (args === null || args === undefined) return html`<p>No arguments.</p>`;
  if (typeof args !== "object" || Array.isArray(args))
    return html`<pre>${JSON.stringify(args, null, 2)}</pre>`;
  const entries = Object.entries(args as Record<string, unknown>);
  if (entries.length === 0) return html`<p>No arguments.</p>`;
  return html`<table class="args">
    <caption>
      Arguments (as redaction and the policy's masks allow)
    </caption>
    <thead>
      <tr>
        <th scope="col">Argument</th>
        <th scope="col">Value</th>
      </tr>
    </thead>
    <tbody>
      ${entries.map(
        ([k, v]) =>
          html`<tr>
            <th scope="row">${k}</th>
            <td>${value(v)}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

/** A plan envelope's constraint on one argument, in words. */
function constraintText(name: string, c: unknown): Html {
  if (c !== null && typeof c === "object" && !Array.isArray(c)) {
    const o = c as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length > 0 && keys.every((k) => k === "min" || k === "max")) {
      const lo = typeof o.min === "number" ? `${o.min} ≤ ` : "";
      const hi = typeof o.max === "number" ? ` ≤ ${o.max}` : "";
      return html`<code>${lo}${name}${hi}</code>`;
    }
    if (keys.length === 1 && Array.isArray(o.enum))
      return html`one of
      ${(o.enum as unknown[]).map((x, i) => html`${i > 0 ? ", " : ""}${value(x)}`)}`;
  }
  return html`exactly ${value(c)}`;
}

/** A plan's envelopes: what each later call may be, how often, how long. */
function envelopesTable(plan: PlanDetail): Html {
  return html`<table class="args plan">
    <caption>
      The plan: each later call inside one of these is allowed and counted (arguments as redaction
      allows)
    </caption>
    <thead>
      <tr>
        <th scope="col">#</th>
        <th scope="col">Tool</th>
        <th scope="col">Resource</th>
        <th scope="col">Arguments</th>
        <th scope="col">Uses</th>
        <th scope="col">Time to live</th>
      </tr>
    </thead>
    <tbody>
      ${plan.envelopes.map(
        (e) =>
          html`<tr class="envelope">
            <td>${String(e.index)}</td>
            <td><code>${e.tool}</code></td>
            <td>${e.resource ?? ""}</td>
            <td>
              <ul>
                ${Object.entries(e.arguments).map(
                  ([k, c]) => html`<li>${k}: ${constraintText(k, c)}</li>`,
                )}
                <li>
                  ${e.other_arguments === "any" ? "other arguments: any" : "no other arguments"}
                </li>
              </ul>
            </td>
            <td>${String(e.uses)} of ${String(e.max_uses)}</td>
            <td>
              ${
                e.ttl_seconds !== null
                  ? humanDuration(Math.min(e.ttl_seconds, plan.ttl_seconds))
                  : humanDuration(plan.ttl_seconds)
              }
            </td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

function traceLink(ctx: PageContext, id: string | null): Html | string {
  if (id === null) return "";
  const t = ctx.traceUrlTemplate;
  const href =
    t !== null ? safeHref(t.replaceAll("{trace_id}", encodeURIComponent(id))) : undefined;
  return href !== undefined
    ? html` <a class="trace" href="${href}" rel="noopener noreferrer">trace ${id}</a>`
    : html` <span class="trace">trace ${id}</span>`;
}

const KIND: Record<string, string> = {
  decision: "Decision",
  access_request: "Access request",
  approval: "Approved",
  denial: "Denied",
  reask: "Re-ask",
  use: "Used",
  action_report: "Action report",
  expired: "Expired",
  cancelled: "Cancelled",
  revoked: "Revoked",
  refused: "Refused",
  other: "Event",
};

function dl(items: Array<[string, Html | string | null]>): Html {
  return html`<dl class="facts">
    ${items
      .filter(([, v]) => v !== null && v !== "")
      .map(
        ([k, v]) =>
          html`<div>
            <dt>${k}</dt>
            <dd>${v}</dd>
          </div>`,
      )}
  </dl>`;
}

export function requestPage(
  ctx: PageContext,
  r: RequestDetail,
  timeline: TimelineEvent[],
  error?: string,
): string {
  const v = ctx.viewer;
  const decide =
    r.can_decide && v !== undefined
      ? html`<section aria-labelledby="decide" class="decide">
          <h2 id="decide">Your decision</h2>
          <form method="post" action="${BASE}/requests/${encodeURIComponent(r.id)}/approve">
            <input type="hidden" name="csrf" value="${v.csrf}" />
            <label for="comment">Comment</label>
            <textarea name="comment" id="comment" rows="3" maxlength="2000"></textarea>
            <div class="buttons">
              <button
                type="submit"
                class="approve"
                formaction="${BASE}/requests/${encodeURIComponent(r.id)}/approve"
              >
                Approve
              </button>
              <button
                type="submit"
                class="deny"
                formaction="${BASE}/requests/${encodeURIComponent(r.id)}/deny"
              >
                Deny
              </button>
            </div>
          </form>
        </section>`
      : html`<p class="whynot" role="status">
          You cannot decide this request: ${r.why_not ?? "not eligible"}.
        </p>`;
  const body = html`<p><a href="${BASE}/">← Inbox</a></p>
    <h1><span class="tool">${r.tool}</span> for ${r.initiator}</h1>
    ${error !== undefined ? html`<p class="error" role="alert">${error}</p>` : ""}
    <p class="status status-${r.outcome}">
      ${OUTCOME[r.outcome] ?? r.outcome} ${timeLeft(r.seconds_left, r.expires_at)}
    </p>
    <section aria-labelledby="why">
      <h2 id="why">Why it needs you</h2>
      ${r.reasons.length > 0 ? reasons(r) : html`<p>The policy gave no reason.</p>`}
      ${justification(r.justification)}
    </section>
    <section aria-labelledby="what">
      <h2 id="what">
        ${r.plan !== undefined ? "What the agent plans to do" : "What the agent wants to do"}
      </h2>
      ${dl([
        ["Tool", html`<code>${r.tool}</code>`],
        ["Class", r.tool_class],
        ["Stage", r.stage],
        ["Agent", r.agent],
        ["On behalf of", r.initiator],
        ["Customer", r.customer],
        ["Job", r.job],
        ["Requested", r.created_at],
        ["Expires", r.status === "pending" ? r.expires_at : null],
        [
          "Similar requests today",
          r.stats !== null
            ? `${r.stats.requested_today} requested by this agent, ${r.stats.approved_today} approved`
            : null,
        ],
        [
          "Who may approve",
          r.requirement !== null
            ? `${r.requirement.approver_roles.join(", ")}${r.requirement.single_use ? " · single use" : ""} · valid ${humanDuration(r.requirement.ttl_seconds)} once approved`
            : null,
        ],
      ])}
      ${r.plan !== undefined ? envelopesTable(r.plan) : argumentsTable(r.arguments)}
    </section>
    ${
      r.status !== "pending"
        ? html`<section aria-labelledby="decision">
            <h2 id="decision">Decision</h2>
            ${dl([
              ["Status", r.status],
              ["Decided by", r.decided_by],
              ["Decided at", r.decided_at],
              ["Comment", r.comment],
              ["Valid until", r.approved_until],
              ["Used at", r.used_at],
              ["Revoked at", r.revoked_at],
            ])}
          </section>`
        : ""
    }
    ${decide}
    <section aria-labelledby="timeline">
      <h2 id="timeline">Timeline</h2>
      ${
        timeline.length === 0
          ? html`<p>No events recorded yet.</p>`
          : html`<ol class="timeline">
              ${timeline.map(
                (e) =>
                  html`<li>
                    <time datetime="${e.at}">${e.at}</time>
                    <strong>${KIND[e.kind] ?? e.kind}</strong
                    >${e.actor !== null ? html` · ${e.actor}` : ""} —
                    ${e.detail}${traceLink(ctx, e.trace_id)}
                  </li>`,
              )}
            </ol>`
      }
    </section>`;
  return layout(ctx, `${r.tool} for ${r.initiator}`, body);
}

function scopeText(s: KillSwitch["scope"]): string {
  const parts = (["agent", "tool", "subject", "job"] as const)
    .filter((k) => s[k] !== undefined)
    .map((k) => `${k} ${s[k] ?? ""}`);
  return parts.length === 0 ? "everything" : parts.join(", ");
}

export function containmentPage(
  ctx: PageContext,
  data: { switches: KillSwitch[]; budgets: BudgetUse[]; rollout: RolloutStage[] },
  error?: string,
): string {
  const v = ctx.viewer;
  const csrf = v?.csrf ?? "";
  const body = html`<h1>Containment</h1>
    ${error !== undefined ? html`<p class="error" role="alert">${error}</p>` : ""}
    <section aria-labelledby="switches">
      <h2 id="switches">Kill switches in force (${data.switches.length})</h2>
      ${
        data.switches.length === 0
          ? html`<p class="empty">None.</p>`
          : html`<ul class="switches">
              ${data.switches.map(
                (s) =>
                  html`<li data-switch-id="${s.id}">
                    <p><strong>Stops ${scopeText(s.scope)}</strong></p>
                    <p class="reason">${s.reason}</p>
                    <p class="meta">
                      Set by ${s.created_by} at
                      <time datetime="${s.created_at}">${s.created_at}</time
                      >${s.expires_at !== null ? html`, until <time datetime="${s.expires_at}">${s.expires_at}</time>` : ", until lifted"}${s.persisted ? "" : html` · <strong>not yet written to disk</strong>`}
                    </p>
                    <form
                      method="post"
                      action="${BASE}/containment/switches/${encodeURIComponent(s.id)}/lift"
                    >
                      <input type="hidden" name="csrf" value="${csrf}" />
                      <button type="submit" class="secondary">Lift</button>
                    </form>
                  </li>`,
              )}
            </ul>`
      }
    </section>
    <section aria-labelledby="set">
      <h2 id="set">Set a kill switch</h2>
      <form method="post" action="${BASE}/containment/switches" class="setswitch">
        <input type="hidden" name="csrf" value="${csrf}" />
        <fieldset>
          <legend>What it stops (leave all empty to stop everything)</legend>
          <div class="field">
            <label for="scope-agent">Agent</label
            ><input id="scope-agent" name="agent" maxlength="256" autocomplete="off" />
          </div>
          <div class="field">
            <label for="scope-tool">Tool</label
            ><input id="scope-tool" name="tool" list="tools" maxlength="256" autocomplete="off" />
            <datalist id="tools">
              ${data.rollout.map((t) => html`<option value="${t.tool}"></option>`)}
            </datalist>
          </div>
          <div class="field">
            <label for="scope-subject">Subject</label
            ><input id="scope-subject" name="subject" maxlength="256" autocomplete="off" />
          </div>
          <div class="field">
            <label for="scope-job">Job</label
            ><input id="scope-job" name="job" maxlength="256" autocomplete="off" />
          </div>
          <div class="field check">
            <input type="checkbox" id="everything" name="everything" value="yes" /><label
              for="everything"
              >Yes, stop everything when no scope is given</label
            >
          </div>
        </fieldset>
        <div class="field">
          <label for="reason">Reason</label
          ><textarea id="reason" name="reason" rows="2" maxlength="1000" required></textarea>
        </div>
        <div class="field">
          <label for="expires">Expires</label>
          <select id="expires" name="expires">
            <option value="">Never (until lifted)</option>
            <option value="900">In 15 minutes</option>
            <option value="3600">In 1 hour</option>
            <option value="14400">In 4 hours</option>
            <option value="86400">In 24 hours</option>
            <option value="604800">In 7 days</option>
          </select>
        </div>
        <button type="submit" class="deny">Set kill switch</button>
      </form>
    </section>
    <section aria-labelledby="budgets">
      <h2 id="budgets">Budgets</h2>
      ${
        data.budgets.length === 0
          ? html`<p class="empty">No budgets in the policy's data.</p>`
          : html`<table>
              <caption>
                Current use within each budget's window
              </caption>
              <thead>
                <tr>
                  <th scope="col">Budget</th>
                  <th scope="col">Tool</th>
                  <th scope="col">Per</th>
                  <th scope="col">Limit</th>
                  <th scope="col">Window</th>
                  <th scope="col">Use</th>
                </tr>
              </thead>
              <tbody>
                ${data.budgets.map(
                  (b) =>
                    html`<tr>
                      <th scope="row">${b.name}</th>
                      <td>${b.tools.join(", ")}</td>
                      <td>${b.per}</td>
                      <td>${b.limit ?? "in the sidecars' bundle"}</td>
                      <td>${humanDuration(b.window_seconds)}</td>
                      <td>
                        ${
                          b.keys.length === 0
                            ? "none"
                            : html`<ul class="plain">
                                ${b.keys.slice(0, 20).map((k) => html`<li>${k.key}: ${k.used}${b.limit !== null ? ` of ${b.limit}` : ""}</li>`)}
                              </ul>`
                        }
                      </td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>
    <section aria-labelledby="rollout">
      <h2 id="rollout">Rollout stages (read-only)</h2>
      ${
        data.rollout.length === 0
          ? html`<p class="empty">The active bundle names no tools.</p>`
          : html`<table>
              <caption>
                Stages are set in the policy bundle
              </caption>
              <thead>
                <tr>
                  <th scope="col">Tool</th>
                  <th scope="col">Class</th>
                  <th scope="col">Stage</th>
                </tr>
              </thead>
              <tbody>
                ${data.rollout.map(
                  (t) =>
                    html`<tr>
                      <th scope="row"><code>${t.tool}</code></th>
                      <td>${t.tool_class ?? "—"}</td>
                      <td>${t.stage ?? "—"}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>`;
  return layout(ctx, "Containment", body, "containment");
}

export function errorPage(ctx: PageContext, status: number, message: string): string {
  const title =
    status === 403
      ? "Not allowed"
      : status === 404
        ? "Not found"
        : status >= 500
          ? "Something failed"
          : "Cannot do that";
  return layout(
    ctx,
    title,
    html`<h1>${title}</h1>
      <p class="error" role="alert">${message}</p>
      <p><a href="${BASE}/">Back to the inbox</a></p>`,
  );
}

/** After an OIDC callback reached cross-site: a same-site hop so the SameSite=Strict cookie is sent. */
export function continuePage(ctx: PageContext, next = `${BASE}/`): string {
  return layout(
    ctx,
    "Signed in",
    html`<h1>Signed in</h1>
      <p><a class="button" id="continue" href="${next}">Continue to the console</a></p>`,
  ).replace(
    "<head>",
    html`<head>
      <meta http-equiv="refresh" content="0;url=${next}" />
    </head>`.toString(),
  );
}
