/**
 * Notifications of a new pending access request (docs/notifications.md):
 * Slack (incoming webhook, Block Kit), Microsoft Teams (incoming webhook, an
 * Adaptive Card) and the signed webhook (approvals.webhook.*) as a CloudEvents
 * 1.0 structured JSON event, HMAC-signed.
 *
 * Never on the decision path: `notify(view)` only queues (bounded: past
 * `maxQueue` a notification is dropped and a warning logged) and returns;
 * deliveries run in the background, a few at a time, each attempt with its
 * own timeout, retried with exponential backoff and jitter on network errors,
 * 429 and 5xx. Failures are logged with the target's kind (slack, teams,
 * webhook), the HTTP status or the error's name — never a URL (webhook URLs
 * are credentials) nor a body.
 *
 * What is sent is the approvers' view (src/approvals/rules.ts approverView):
 * already redacted — the arguments as the policy's redaction and audit mask
 * allow, the reason messages and the agent's justification redacted like free
 * text. The agent's justification is always labelled as the agent's words.
 * Every message links to `<console base>/console/requests/<task id>`; the
 * link opens the page, deciding there needs a login (no approve-by-link).
 */
import { createHmac, randomUUID } from "node:crypto";
import type { Logger } from "../shared/log";

export type NotifyTarget = "slack" | "teams" | "webhook";

export interface ApprovalNotifierOptions {
  /** Slack incoming-webhook URL (approvals.notify.slack_webhook_url). */
  slackWebhookUrl?: string | null;
  /** Teams incoming-webhook URL (approvals.notify.teams_webhook_url). */
  teamsWebhookUrl?: string | null;
  /** The signed webhook (approvals.webhook.url / .secret). */
  webhook?: { url: string; secret: string } | null;
  /** The console's base URL (console.public_url, else the control port's URL), no trailing slash. */
  consoleBase?: string | null;
  /** CloudEvents `source` (a URI reference). Default "/toolgate". */
  source?: string;
  log: Logger;
  /** Attempts per delivery (default 5). */
  attempts?: number;
  /** First retry delay; doubled each attempt, ±20 % jitter (default 1000 ms). */
  baseDelayMs?: number;
  /** One attempt's timeout (default 5000 ms). */
  timeoutMs?: number;
  /** Deliveries queued or waiting to retry, at most (default 1000). */
  maxQueue?: number;
  /** Deliveries in flight at once (default 4). */
  concurrency?: number;
}

interface Delivery {
  target: NotifyTarget;
  url: string;
  body: string;
  headers: Record<string, string>;
  attempt: number;
  taskId: string;
}

type View = Record<string, unknown>;

const CE_TYPE = "dev.toolgate.approval.requested";

/** The signed webhook's envelope: CloudEvents 1.0 structured mode, `data` the payload of before. */
export function cloudEvent(
  view: View,
  opts: { source?: string; id?: string; now?: Date } = {},
): Record<string, unknown> {
  const now = opts.now ?? new Date();
  return {
    specversion: "1.0",
    id: opts.id ?? randomUUID(),
    source: opts.source ?? "/toolgate",
    type: CE_TYPE,
    subject: typeof view.id === "string" ? view.id : undefined,
    time: now.toISOString(),
    datacontenttype: "application/json",
    data: { event: "approval.pending", approval: view, sent_at: now.toISOString() },
  };
}

/** `<base>/console/requests/<id>` (the id percent-encoded), or undefined without a base. */
export function consoleLink(base: string | null | undefined, id: unknown): string | undefined {
  if (base === null || base === undefined || typeof id !== "string") return undefined;
  return `${base.replace(/\/+$/, "")}/console/requests/${encodeURIComponent(id)}`;
}

// -- what a message says ------------------------------------------------------------

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;

/** Cut to `max` characters (with an ellipsis). */
function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(0, max - 1))}…`;
}

function scalar(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  if (typeof v === "boolean") return String(v);
  return undefined;
}

export interface MessageFacts {
  id: string;
  tool: string;
  /** "class, stage" of the tool as the policy named them (undefined: unknown). */
  toolKind: string | undefined;
  initiator: string;
  agent: string;
  /** The reasons' words (the code when a reason has no message). */
  reasons: string[];
  /** `amount: 120` or up to three key arguments, as redacted. */
  argument: string | undefined;
  customer: string | undefined;
  justification: string | undefined;
  expiresAt: string | undefined;
  link: string | undefined;
}

/** What every message says, read from the approvers' (redacted) view. */
export function messageFacts(view: View, base: string | null | undefined): MessageFacts {
  const request = obj(view.request);
  const action = obj(request?.action);
  const args = obj(obj(action?.properties)?.arguments);
  let argument: string | undefined;
  if (args !== undefined) {
    const amount = scalar(args.amount);
    if (amount !== undefined) {
      const currency = scalar(args.currency);
      argument = `amount: ${amount}${currency !== undefined ? ` ${currency}` : ""}`;
    } else {
      const parts: string[] = [];
      for (const [k, v] of Object.entries(args)) {
        const s = scalar(v);
        if (s !== undefined) parts.push(`${k}: ${cut(s, 80)}`);
        if (parts.length === 3) break;
      }
      if (parts.length > 0) argument = parts.join(", ");
    }
  }
  const resource = obj(request?.resource);
  const job = obj(obj(request?.context)?.job);
  const customer = str(job?.customer_id) ?? str(resource?.id);
  const reasons = Array.isArray(view.reasons)
    ? view.reasons
        .map((r) => {
          if (typeof r === "string") return r;
          const o = obj(r);
          const m = str(o?.message);
          return m !== undefined && m !== "" ? m : (str(o?.code) ?? "");
        })
        .filter((r) => r !== "")
    : [];
  const justification = str(view.agent_justification);
  return {
    id: str(view.id) ?? "",
    tool: str(view.tool) ?? "(unknown tool)",
    toolKind:
      [str(view.tool_class), str(view.tool_stage)]
        .filter((x): x is string => x !== undefined && x !== "")
        .join(", ") || undefined,
    initiator: str(view.initiator) ?? "(unknown)",
    agent: str(view.agent) ?? "(unknown)",
    reasons,
    argument,
    customer,
    justification: justification !== undefined && justification !== "" ? justification : undefined,
    expiresAt: str(view.expires_at),
    link: consoleLink(base, view.id),
  };
}

/** Slack mrkdwn: &, < and > escaped (no links, mentions or @channel smuggled in by text). */
export function slackEscape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One line: line breaks and other control characters become a space (no fake fields or headings). */
function oneLine(s: string): string {
  return s.replace(/[\p{Cc}\u2028\u2029]+/gu, " ");
}

/**
 * Escaped text cut to at most `max` characters (with an ellipsis), never in
 * the middle of an entity: Slack limits a block's text AFTER escaping, and a
 * text over its limit makes Slack refuse the whole message.
 */
function cutEscaped(e: string, max: number): string {
  if (e.length <= max) return e;
  let at = Math.max(0, max - 1);
  const amp = e.lastIndexOf("&", at - 1);
  if (amp >= 0 && e.indexOf(";", amp) >= at) at = amp;
  return `${e.slice(0, at)}…`;
}

/** Outside text as Slack mrkdwn on one line: escaped, then cut to `max`. */
function slackLine(s: string, max: number): string {
  return cutEscaped(slackEscape(oneLine(s)), max);
}

/** Slack incoming-webhook message: Block Kit `blocks` (and `text`, the notification's fallback). */
export function slackMessage(f: MessageFacts): Record<string, unknown> {
  // every text from outside escaped AND measured after escaping (Slack's limits: a field
  // 2000 characters, a section 3000, a header 150); every mrkdwn text verbatim: Slack does
  // not turn a bare URL, #channel or @channel/@here in it into a link or a mention
  // (https://docs.slack.dev/reference/block-kit/composition-objects/text-object)
  const fields: Array<Record<string, unknown>> = [
    {
      type: "mrkdwn",
      verbatim: true,
      text: `*Tool*\n${slackLine(f.tool, 500)}${f.toolKind !== undefined ? ` (${slackLine(f.toolKind, 140)})` : ""}`,
    },
    { type: "mrkdwn", verbatim: true, text: `*Requested by*\n${slackLine(f.initiator, 500)}` },
    { type: "mrkdwn", verbatim: true, text: `*Agent*\n${slackLine(f.agent, 500)}` },
  ];
  if (f.argument !== undefined)
    fields.push({
      type: "mrkdwn",
      verbatim: true,
      text: `*Arguments*\n${slackLine(f.argument, 500)}`,
    });
  if (f.customer !== undefined)
    fields.push({
      type: "mrkdwn",
      verbatim: true,
      text: `*Customer*\n${slackLine(f.customer, 500)}`,
    });
  if (f.expiresAt !== undefined)
    fields.push({
      type: "mrkdwn",
      verbatim: true,
      text: `*Expires*\n${slackLine(f.expiresAt, 100)}`,
    });
  const blocks: Array<Record<string, unknown>> = [
    {
      type: "header",
      text: {
        type: "plain_text",
        text: cut(oneLine(`Approval needed: ${f.tool}`), 150),
        emoji: false,
      },
    },
    { type: "section", fields },
  ];
  if (f.reasons.length > 0) {
    blocks.push({
      type: "section",
      text: {
        type: "mrkdwn",
        verbatim: true,
        text: cutEscaped(
          `*Why toolgate asks*\n${f.reasons.map((r) => `• ${slackLine(r, 3000)}`).join("\n")}`,
          3000,
        ),
      },
    });
  }
  if (f.justification !== undefined) {
    const quoted = slackEscape(f.justification)
      .split("\n")
      .map((l) => `>${l}`)
      .join("\n");
    blocks.push({
      type: "section",
      text: {
        type: "mrkdwn",
        verbatim: true,
        text: cutEscaped(
          `*The agent's justification* (the agent's own words, not toolgate's)\n${quoted}`,
          3000,
        ),
      },
    });
  }
  if (f.link !== undefined) {
    blocks.push({
      type: "actions",
      elements: [
        {
          type: "button",
          text: { type: "plain_text", text: "Open in the console", emoji: false },
          url: f.link,
          action_id: "open_console",
        },
      ],
    });
  }
  blocks.push({
    type: "context",
    elements: [
      {
        type: "mrkdwn",
        verbatim: true,
        text: slackLine(
          `Request ${f.id}. Deciding needs a login at the console; this message cannot approve.`,
          2000,
        ),
      },
    ],
  });
  return {
    // the push notification's text is mrkdwn too: escaped like the blocks
    text: slackLine(`Approval needed: ${f.tool} requested by ${f.initiator}`, 300),
    blocks,
  };
}

/** Teams markdown in a TextBlock: characters that would start formatting or a link are escaped. */
export function teamsEscape(s: string): string {
  return s.replace(/[\\`*_[\]()<>#!|~{}-]/g, (c) => `\\${c}`);
}

/** Teams incoming-webhook message: one Adaptive Card (1.4) attachment. */
export function teamsMessage(f: MessageFacts): Record<string, unknown> {
  const facts: Array<{ title: string; value: string }> = [
    {
      title: "Tool",
      value: cut(f.toolKind !== undefined ? `${f.tool} (${f.toolKind})` : f.tool, 640),
    },
    { title: "Requested by", value: cut(f.initiator, 500) },
    { title: "Agent", value: cut(f.agent, 500) },
  ];
  if (f.argument !== undefined) facts.push({ title: "Arguments", value: cut(f.argument, 500) });
  if (f.customer !== undefined) facts.push({ title: "Customer", value: cut(f.customer, 500) });
  if (f.expiresAt !== undefined) facts.push({ title: "Expires", value: f.expiresAt });
  const body: Array<Record<string, unknown>> = [
    {
      type: "TextBlock",
      text: teamsEscape(cut(`Approval needed: ${f.tool}`, 200)),
      weight: "Bolder",
      size: "Medium",
      wrap: true,
    },
    { type: "FactSet", facts: facts.map((x) => ({ title: x.title, value: teamsEscape(x.value) })) },
  ];
  if (f.reasons.length > 0) {
    body.push({ type: "TextBlock", text: "Why toolgate asks", weight: "Bolder", wrap: true });
    for (const r of f.reasons.slice(0, 10))
      body.push({ type: "TextBlock", text: teamsEscape(cut(r, 1000)), wrap: true });
  }
  if (f.justification !== undefined) {
    body.push({
      type: "TextBlock",
      text: "The agent's justification (the agent's own words, not toolgate's)",
      weight: "Bolder",
      wrap: true,
    });
    body.push({
      type: "Container",
      style: "emphasis",
      items: [
        { type: "TextBlock", text: teamsEscape(f.justification), wrap: true, isSubtle: true },
      ],
    });
  }
  body.push({
    type: "TextBlock",
    text: teamsEscape(
      `Request ${f.id}. Deciding needs a login at the console; this card cannot approve.`,
    ),
    size: "Small",
    isSubtle: true,
    wrap: true,
  });
  const card: Record<string, unknown> = {
    $schema: "http://adaptivecards.io/schemas/adaptive-card.json",
    type: "AdaptiveCard",
    version: "1.4",
    body,
  };
  if (f.link !== undefined)
    card.actions = [{ type: "Action.OpenUrl", title: "Open in the console", url: f.link }];
  return {
    type: "message",
    attachments: [
      { contentType: "application/vnd.microsoft.card.adaptive", contentUrl: null, content: card },
    ],
  };
}

// -- delivery -----------------------------------------------------------------------

/** The error's name and code, never its message (a message may quote the URL). */
function errorName(e: unknown): string {
  const err = e as { name?: unknown; code?: unknown; cause?: { code?: unknown; name?: unknown } };
  const code = err.cause?.code ?? err.code;
  const name = typeof err.name === "string" ? err.name : "Error";
  return typeof code === "string" ? `${name} ${code}` : name;
}

export class ApprovalNotifier {
  private readonly opts: ApprovalNotifierOptions;
  private readonly queue: Delivery[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly controllers = new Set<AbortController>();
  private waiting = 0;
  private inFlight = 0;
  private base: string | null;
  private stopped = false;
  /** Deliveries dropped because the queue was full. */
  dropped = 0;

  constructor(opts: ApprovalNotifierOptions) {
    this.opts = opts;
    this.base = opts.consoleBase ?? null;
  }

  /** True when at least one target is configured. */
  get enabled(): boolean {
    return !!this.opts.slackWebhookUrl || !!this.opts.teamsWebhookUrl || this.opts.webhook != null;
  }

  /** The console's base URL, when known only once the control port listens. */
  setConsoleBase(base: string): void {
    if (this.opts.consoleBase == null) this.base = base;
  }

  /** Queues the messages for a new pending task; returns at once, never throws. */
  notify(view: View): void {
    if (this.stopped) return;
    try {
      const taskId = str(view.id) ?? "";
      const facts = messageFacts(view, this.base);
      const json = { "content-type": "application/json" };
      if (this.opts.slackWebhookUrl)
        this.enqueue({
          target: "slack",
          url: this.opts.slackWebhookUrl,
          body: JSON.stringify(slackMessage(facts)),
          headers: json,
          attempt: 1,
          taskId,
        });
      if (this.opts.teamsWebhookUrl)
        this.enqueue({
          target: "teams",
          url: this.opts.teamsWebhookUrl,
          body: JSON.stringify(teamsMessage(facts)),
          headers: json,
          attempt: 1,
          taskId,
        });
      const hook = this.opts.webhook;
      if (hook) {
        const event = cloudEvent(
          { ...view, ...(facts.link !== undefined ? { console_url: facts.link } : {}) },
          this.opts.source !== undefined ? { source: this.opts.source } : {},
        );
        const body = JSON.stringify(event);
        this.enqueue({
          target: "webhook",
          url: hook.url,
          body,
          headers: {
            "content-type": "application/cloudevents+json; charset=utf-8",
            "x-toolgate-signature": `sha256=${createHmac("sha256", hook.secret).update(body).digest("hex")}`,
            "x-toolgate-event": "approval.pending",
            "ce-specversion": "1.0",
          },
          attempt: 1,
          taskId,
        });
      }
    } catch (e) {
      this.opts.log.error("approval notification not queued", {
        event: "approvals.notify_failed",
        error: errorName(e),
      });
    }
  }

  /** Drops what is queued, cancels retries and aborts deliveries in flight. */
  stop(): Promise<void> {
    this.stopped = true;
    this.queue.length = 0;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const c of this.controllers) c.abort();
    return Promise.resolve();
  }

  /** Queued, waiting to retry, or in flight. */
  get backlog(): number {
    return this.queue.length + this.waiting + this.inFlight;
  }

  private enqueue(d: Delivery): void {
    if (this.queue.length + this.waiting >= (this.opts.maxQueue ?? 1000)) {
      this.dropped++;
      this.opts.log.warn("approval notification dropped: the queue is full", {
        event: "approvals.notify_dropped",
        target: d.target,
        approval_id: d.taskId,
      });
      return;
    }
    this.queue.push(d);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.inFlight < (this.opts.concurrency ?? 4)) {
      const d = this.queue.shift();
      if (d === undefined) return;
      this.inFlight++;
      void this.send(d).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async send(d: Delivery): Promise<void> {
    const controller = new AbortController();
    this.controllers.add(controller);
    const timer = setTimeout(() => controller.abort(), this.opts.timeoutMs ?? 5000);
    let outcome: string;
    let retry = true;
    try {
      const res = await fetch(d.url, {
        method: "POST",
        headers: d.headers,
        body: d.body,
        signal: controller.signal,
        redirect: "error",
      });
      // the answer's body is not needed (and never logged)
      await res.body?.cancel().catch(() => undefined);
      if (res.ok) return;
      outcome = `HTTP ${res.status}`;
      retry = res.status >= 500 || res.status === 429;
    } catch (e) {
      outcome = controller.signal.aborted ? "timeout" : errorName(e);
    } finally {
      clearTimeout(timer);
      this.controllers.delete(controller);
    }
    if (this.stopped) return;
    const attempts = this.opts.attempts ?? 5;
    if (!retry || d.attempt >= attempts) {
      this.opts.log.error("approval notification failed", {
        event: "approvals.notify_failed",
        target: d.target,
        approval_id: d.taskId,
        error: outcome,
        attempts: d.attempt,
      });
      return;
    }
    this.opts.log.warn("approval notification failed; retrying", {
      event: "approvals.notify_retry",
      target: d.target,
      approval_id: d.taskId,
      error: outcome,
      attempt: d.attempt,
    });
    const delay =
      (this.opts.baseDelayMs ?? 1000) * 2 ** (d.attempt - 1) * (0.8 + Math.random() * 0.4);
    this.waiting++;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.waiting--;
      if (this.stopped) return;
      this.queue.push({ ...d, attempt: d.attempt + 1 });
      this.pump();
    }, delay);
    t.unref();
    this.timers.add(t);
  }
}

/** The notifier the config asks for, or undefined when no target is configured. */
export function notifierFromConfig(
  approvals: {
    webhook: { url: string; secret: string } | null;
    notify: { slackWebhookUrl: string | null; teamsWebhookUrl: string | null };
  },
  consoleBase: string | null,
  log: Logger,
  source?: string,
): ApprovalNotifier | undefined {
  const n = new ApprovalNotifier({
    slackWebhookUrl: approvals.notify.slackWebhookUrl,
    teamsWebhookUrl: approvals.notify.teamsWebhookUrl,
    webhook: approvals.webhook,
    consoleBase,
    log,
    ...(source !== undefined ? { source } : {}),
  });
  return n.enabled ? n : undefined;
}
