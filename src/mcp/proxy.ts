/**
 * The enforcement core of `toolgate mcp`: an MCP server (the SDK's low-level
 * `Server`, one per agent session) whose only methods are initialize, ping,
 * tools/list and tools/call — plus the read-only list methods the config
 * passes through explicitly. Every other method is MethodNotFound: no
 * upstream tool, resource or prompt is reachable except through a decision.
 *
 * tools/list: the upstream tools filtered by AuthZEN action search for the
 * session (allowed: listed; needs_approval: listed and marked; denied:
 * hidden). tools/call: decided first; deny → a tool error with the reasons;
 * needs_approval → the access request, then URL elicitation of the console's
 * page (or a tool error with the link, and the same call goes through once
 * approved); allow → forwarded with the grant, then an action report.
 */
import { createHash } from "node:crypto";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  ElicitResultSchema,
  ListPromptsRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListResourcesRequestSchema,
  ListToolsRequestSchema,
  type CallToolResult,
  type ServerCapabilities,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import {
  applyRedactions,
  requiresRedaction,
  ToolDenied,
  ToolgateError,
  unknownObligation,
  type Approval,
  type Decision,
  type DecisionRequest,
  type Entity,
  type Reason,
  type ToolgateClient,
} from "../client";
import { forbiddenKey, isObject } from "../shared/guards";
import type { Logger } from "../shared/log";
import { packageVersion } from "../shared/paths";
import type { McpProxyConfig, PassthroughMethod } from "./config";
import { buildRequest, MappingError, mapsResource } from "./mapping";
import { CallOutcomeUnknown, logSafe, type CatalogTool, type Upstreams } from "./upstream";

/** `_meta` keys the proxy sets (docs/mcp.md). */
export const META = {
  grant: "io.toolgate/grant",
  needsApproval: "io.toolgate/needs_approval",
  approval: "io.toolgate/approval",
  outcome: "io.toolgate/outcome",
  reasons: "io.toolgate/reasons",
  decisionId: "io.toolgate/decision_id",
  approvalUrl: "io.toolgate/approval_url",
  taskId: "io.toolgate/access_request_id",
  withheld: "io.toolgate/withheld",
} as const;

export const NEEDS_APPROVAL_NOTE =
  "[toolgate] Calls of this tool need a person's approval: the call returns a link to the approval page, and the same call goes through once approved.";

interface Pending {
  taskId: string;
  url: string;
  /** ms since epoch: the pending entry is forgotten after this. */
  until: number;
}

/** One agent session's state: the approvals it waits for, by the call they bind. */
class Session {
  readonly pending = new Map<string, Pending>();
  constructor(readonly key: string) {}
  sweep(now: number): void {
    for (const [k, p] of this.pending) if (p.until <= now) this.pending.delete(k);
  }
}

export interface ProxyDeps {
  config: McpProxyConfig;
  upstreams: Upstreams;
  sidecar: ToolgateClient;
  log: Logger;
}

type Extra = {
  signal: AbortSignal;
  _meta?: { progressToken?: string | number };
  sendRequest: Server["request"];
  sendNotification: (n: { method: string; params?: Record<string, unknown> }) => Promise<void>;
};

/** JSON with sorted keys (the arguments' binding for pending approvals). */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isObject(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(",")}}`;
  return JSON.stringify(v) ?? "null";
}

function bindingKey(req: DecisionRequest): string {
  const { subject, action, resource, context } = req;
  return createHash("sha256")
    .update(canonical({ subject, action, resource, job: context?.job ?? null }))
    .digest("base64url");
}

function toolError(
  code: string,
  message: string,
  meta: Record<string, unknown> = {},
  reasons: Reason[] = [{ code, message }],
): CallToolResult {
  return {
    content: [
      {
        type: "text",
        text: `${message}\n${reasons.map((r) => `- ${r.code}: ${r.message}`).join("\n")}`,
      },
    ],
    isError: true,
    _meta: { [META.reasons]: reasons, ...meta },
  };
}

function denied(tool: string, d: Decision): CallToolResult {
  return toolError(
    d.reasons[0]?.code ?? "denied",
    `toolgate denied ${tool}.`,
    { [META.outcome]: d.outcome, [META.decisionId]: d.decision_id },
    d.reasons.map((r) => ({ code: String(r.code), message: String(r.message) })),
  );
}

function errorText(e: unknown): { type: string; message: string } {
  const type = e instanceof Error ? e.name : typeof e;
  const message = e instanceof Error ? e.message : String(e);
  return { type: type.slice(0, 256), message: message.slice(0, 4096) };
}

/** A name the agent sent that is no tool: a short hash and a cut, sanitised form for the log. */
function unknownName(name: unknown): { tool: string; tool_hash: string } {
  const s = String(name);
  return {
    tool: s.slice(0, 64).replace(/[^A-Za-z0-9_.-]/g, "?"),
    tool_hash: createHash("sha256").update(s).digest("hex").slice(0, 16),
  };
}

/** A sidecar failure as the tool error the agent sees (fail closed). */
function sidecarFailure(e: unknown, tool: string): CallToolResult {
  if (e instanceof ToolDenied)
    return toolError(
      e.code,
      `toolgate did not allow ${tool}: ${e.message}`,
      {},
      e.reasons.length ? e.reasons : undefined,
    );
  if (e instanceof ToolgateError && e.status !== 0)
    return toolError(e.code, `toolgate refused to decide ${tool} (HTTP ${e.status}): ${e.message}`);
  return toolError(
    "mcp_sidecar_unavailable",
    `toolgate could not be asked about ${tool} (${e instanceof ToolgateError ? e.code : "error"}); the call was not made.`,
  );
}

export class McpProxy {
  private readonly cfg: McpProxyConfig;
  private readonly upstreams: Upstreams;
  private readonly sidecar: ToolgateClient;
  private readonly log: Logger;

  constructor(deps: ProxyDeps) {
    this.cfg = deps.config;
    this.upstreams = deps.upstreams;
    this.sidecar = deps.sidecar;
    this.log = deps.log;
  }

  /** A new agent-facing MCP server for one session (one per HTTP session; one for stdio). */
  createServer(sessionKey: string): Server {
    const capabilities: ServerCapabilities = { tools: { listChanged: true } };
    const pass = new Set<PassthroughMethod>(this.cfg.passthrough);
    if (pass.has("resources/list") || pass.has("resources/templates/list"))
      capabilities.resources = {};
    if (pass.has("prompts/list")) capabilities.prompts = {};
    const server = new Server(
      { name: "toolgate-mcp-proxy", version: packageVersion() },
      {
        capabilities,
        instructions:
          "Tools behind toolgate: each call is authorized first. A denied call returns an error with the reasons; a call that needs a person's approval returns (or opens) the approval page.",
      },
    );
    const session = new Session(sessionKey);
    // an upstream's list changed: this agent should list again (filtered anew)
    const off = this.upstreams.onToolsChanged(() => {
      server.sendToolListChanged().catch(() => undefined);
    });
    server.onclose = () => {
      off();
    };
    server.setRequestHandler(ListToolsRequestSchema, async () => ({
      tools: await this.listTools(),
    }));
    server.setRequestHandler(CallToolRequestSchema, async (request, extra) =>
      this.callTool(server, session, request.params, extra as unknown as Extra),
    );
    if (pass.has("resources/list"))
      server.setRequestHandler(ListResourcesRequestSchema, async (r) =>
        this.passthrough("resources/list", "resources", r.params),
      );
    if (pass.has("resources/templates/list"))
      server.setRequestHandler(ListResourceTemplatesRequestSchema, async (r) =>
        this.passthrough("resources/templates/list", "resourceTemplates", r.params),
      );
    if (pass.has("prompts/list"))
      server.setRequestHandler(ListPromptsRequestSchema, async (r) =>
        this.passthrough("prompts/list", "prompts", r.params),
      );
    return server;
  }

  /** What an operator should know: `tools.<name>` mapping keys that match no tool (see mcp.mapping_unmatched). */
  status(): { unmatched_mappings: string[]; require_mapping: boolean } {
    return {
      unmatched_mappings: this.upstreams.unmatchedMappings(),
      require_mapping: this.cfg.requireMapping,
    };
  }

  /** The tools the session may see: action search over the upstream catalog. */
  async listTools(): Promise<Tool[]> {
    const catalog = await this.upstreams.refresh();
    const verdicts = await this.searchActions();
    const out: Tool[] = [];
    for (const [name, c] of catalog) {
      const v = verdicts.get(name);
      if (v === undefined) continue; // denied (or not registered): hidden
      // require_mapping: a tool whose calls would be refused is not offered either
      if (this.cfg.requireMapping && !mapsResource(c.mapping, this.cfg.tools.get(name))) continue;
      const tool: Tool = { ...c.tool, name };
      if (v.needsApproval) {
        tool.description = `${c.tool.description ? `${c.tool.description}\n\n` : ""}${NEEDS_APPROVAL_NOTE}`;
        tool._meta = {
          [META.needsApproval]: true,
          ...(v.approval !== undefined ? { [META.approval]: v.approval } : {}),
        };
      }
      out.push(tool);
    }
    return out;
  }

  private async searchActions(): Promise<
    Map<string, { needsApproval: boolean; approval?: unknown }>
  > {
    const { subject, resource, context } = this.cfg.session;
    const out = new Map<string, { needsApproval: boolean; approval?: unknown }>();
    let token: string | undefined;
    for (let page = 0; page < 50; page++) {
      const res = await this.sidecar.searchActions({
        subject,
        resource,
        context,
        page: token !== undefined ? { token, limit: 1000 } : { limit: 1000 },
      });
      for (const r of res.results) {
        if (typeof r.name !== "string") continue;
        const props = "properties" in r && isObject(r.properties) ? r.properties : undefined;
        out.set(
          r.name,
          props?.needs_approval === true
            ? { needsApproval: true, approval: props.approval }
            : { needsApproval: false },
        );
      }
      token = res.page?.next_token;
      if (token === undefined || token === "") break;
    }
    return out;
  }

  private async passthrough(
    method: PassthroughMethod,
    key: string,
    params: Record<string, unknown> | undefined,
  ): Promise<Record<string, unknown>> {
    const items: unknown[] = [];
    const p =
      isObject(params) && typeof params.cursor === "string" ? { cursor: params.cursor } : {};
    for (const s of this.upstreams.servers) {
      try {
        const res = await s.request(method, p);
        const list = res[key];
        if (Array.isArray(list))
          for (const it of list.slice(0, this.cfg.limits.toolsPerServer))
            if (
              isObject(it) &&
              forbiddenKey(it) === undefined &&
              JSON.stringify(it).length <= this.cfg.limits.schemaBytes
            )
              items.push(it);
      } catch (e) {
        this.log.warn("passthrough failed on an upstream", {
          event: "mcp.passthrough_failed",
          server: s.name,
          method,
          error: logSafe((e as Error).message),
        });
      }
    }
    return { [key]: items };
  }

  private async callTool(
    server: Server,
    session: Session,
    params: { name: string; arguments?: Record<string, unknown> | undefined },
    extra: Extra,
  ): Promise<CallToolResult> {
    const started = Date.now();
    const name = params.name;
    const args = params.arguments ?? {};
    const logCall = (outcome: string, fields: Record<string, unknown> = {}) =>
      this.log.info("tools/call", {
        event: "mcp.call",
        session: session.key,
        ...unknownName(name), // replaced by the catalog's name once the tool is known
        outcome,
        duration_ms: Date.now() - started,
        ...fields,
      });
    if (!isObject(args) || forbiddenKey(args) !== undefined) {
      logCall("refused");
      return toolError(
        "forbidden_key",
        `the arguments of ${name} hold a forbidden key or are not an object; the call was not made.`,
      );
    }
    const c = typeof name === "string" ? await this.upstreams.find(name) : undefined;
    if (c === undefined) {
      logCall("unknown_tool");
      return toolError(
        "mcp_unknown_tool",
        `no tool ${JSON.stringify(String(name).slice(0, 128))} behind this proxy.`,
      );
    }
    const known = (outcome: string, fields: Record<string, unknown> = {}) =>
      logCall(outcome, { tool: c.name, tool_hash: undefined, ...fields });
    if (c.mapping instanceof Error) {
      known("mapping_failed");
      return toolError(
        "mcp_mapping_failed",
        `${name}: its server's x-authzen-mapping cannot be applied (${c.mapping.message}); the call was not made.`,
      );
    }
    const mapping = this.cfg.tools.get(c.name);
    if (this.cfg.requireMapping && !mapsResource(c.mapping, mapping)) {
      known("mapping_failed");
      return toolError(
        "mcp_mapping_failed",
        `${c.name}: no mapping names the record this tool's calls touch (require_mapping is on); the call was not made. Map it: tools.${c.name}.resource.id: {arg: /<argument>} in the proxy's config.`,
      );
    }
    let req: DecisionRequest;
    try {
      req = buildRequest(
        this.cfg.session,
        { action: c.name, upstreamName: c.upstreamName, arguments: args },
        c.mapping,
        mapping,
      );
    } catch (e) {
      if (!(e instanceof MappingError)) throw e;
      known("mapping_failed");
      return toolError("mcp_mapping_failed", `${name}: ${e.message}; the call was not made.`);
    }

    let decision: Decision | undefined;
    try {
      session.sweep(Date.now());
      const key = bindingKey(req);
      const waiting = session.pending.get(key);
      let asked: DecisionRequest = req;
      if (waiting !== undefined) {
        const task = await this.sidecar.getAccessRequest(waiting.taskId);
        const status = task.task.status;
        if (status === "pending") {
          if (!urlElicitation(server)) {
            known("approval_pending", { access_request: waiting.taskId });
            return this.approvalRequired(
              name,
              waiting.taskId,
              waiting.url,
              "approval_pending",
              "is still waiting for approval",
            );
          }
          const r = await this.elicitAndWait(session, c, req, key, waiting, extra);
          if ("result" in r) {
            known(r.outcome, { access_request: waiting.taskId });
            return r.result;
          }
          decision = r.decision;
        } else {
          session.pending.delete(key);
          if (status === "approved" && task.result?.approval !== undefined)
            asked = withApproval(req, task.result.approval);
          // denied, expired, cancelled: a fresh decision (a new request if still needed)
        }
      }
      decision ??= await this.sidecar.decide(asked);
      if (decision.outcome === "needs_approval") {
        const r = await this.needsApproval(server, session, c, req, decision, extra);
        if ("result" in r) {
          known(r.outcome, { decision_id: decision.decision_id });
          return r.result;
        }
        decision = r.decision;
      }
    } catch (e) {
      known("error", { error: logSafe(errorText(e).message) });
      return sidecarFailure(e, name);
    }
    if (decision.outcome !== "allow") {
      known(decision.outcome, {
        decision_id: decision.decision_id,
        reasons: decision.reasons.map((r) => r.code),
      });
      return denied(name, decision);
    }
    const odd = unknownObligation(decision.obligations);
    if (odd !== undefined) {
      known("refused", { decision_id: decision.decision_id });
      return toolError(
        "unknown_obligation",
        `${name}: the decision carries an obligation the proxy cannot honour ("${odd.type}"); the call was not made.`,
        { [META.decisionId]: decision.decision_id },
      );
    }
    return this.forward(c, args, decision, req.resource, extra, known);
  }

  /** needs_approval: submit the access request, then elicit (URL mode) and wait, or return the link. */
  private async needsApproval(
    server: Server,
    session: Session,
    c: CatalogTool,
    req: DecisionRequest,
    decision: Decision,
    extra: Extra,
  ): Promise<{ result: CallToolResult; outcome: string } | { decision: Decision }> {
    const ar = decision.access_request;
    if (ar === undefined) return { result: denied(c.name, decision), outcome: "needs_approval" };
    const task = await this.sidecar.requestAccess(req, ar.evaluation_id, {
      justification: `MCP tools/call of ${c.name} through toolgate mcp`,
    });
    const id = task.task.id;
    const url = `${this.cfg.consoleUrl}/console/requests/${encodeURIComponent(id)}`;
    const waitUntil = Math.min(
      Date.parse(task.task.expires_at) || Infinity,
      Date.now() + this.cfg.approval.waitSeconds * 1000,
    );
    // remembered in both flows: a retry of the same call (after an agent-side timeout, say) finds it
    const key = bindingKey(req);
    session.pending.set(key, {
      taskId: id,
      url,
      until: Number.isFinite(waitUntil) ? waitUntil : Date.now() + 3600_000,
    });
    if (!urlElicitation(server)) {
      return {
        result: this.approvalRequired(
          c.name,
          id,
          url,
          "approval_required",
          "needs a person's approval",
        ),
        outcome: "approval_required",
      };
    }
    return this.elicitAndWait(session, c, req, key, session.pending.get(key) as Pending, extra);
  }

  /** URL elicitation of the approval page, then polling the task; the re-asked decision once approved. */
  private async elicitAndWait(
    session: Session,
    c: CatalogTool,
    req: DecisionRequest,
    key: string,
    pending: Pending,
    extra: Extra,
  ): Promise<{ result: CallToolResult; outcome: string } | { decision: Decision }> {
    const { taskId: id, url, until: waitUntil } = pending;
    let answer: { action: string };
    try {
      answer = await extra.sendRequest(
        {
          method: "elicitation/create",
          params: {
            mode: "url",
            elicitationId: id,
            url,
            message: `${c.name} needs a person's approval before it runs. Open the approval page; the call continues once it is approved.`,
          },
        },
        ElicitResultSchema,
        { signal: extra.signal, timeout: Math.max(1000, waitUntil - Date.now()) },
      );
    } catch {
      // the client failed or timed out on the elicitation: the link, as for a client without it
      return {
        result: this.approvalRequired(c.name, id, url, "approval_pending", "waits for approval"),
        outcome: "approval_pending",
      };
    }
    if (answer.action !== "accept") {
      session.pending.delete(key);
      await this.sidecar.cancelAccessRequest(id).catch(() => undefined);
      return {
        result: toolError(
          "approval_declined",
          `${c.name}: the approval was ${answer.action === "decline" ? "declined" : "cancelled"} by the user; the call was not made.`,
          { [META.taskId]: id },
        ),
        outcome: "approval_declined",
      };
    }
    let approval: Approval;
    let polls = 0;
    const progressToken = extra._meta?.progressToken;
    try {
      approval = await this.sidecar.waitForApproval(id, {
        signal: extra.signal,
        expiresAt: waitUntil,
        minDelayMs: 200,
        maxDelayMs: 5000,
        // progress keeps a client's request timer alive (resetTimeoutOnProgress) while a person decides
        onProgress: () => {
          if (progressToken === undefined) return;
          void extra
            .sendNotification({
              method: "notifications/progress",
              params: { progressToken, progress: ++polls, message: `waiting for approval ${id}` },
            })
            .catch(() => undefined);
        },
      });
    } catch (e) {
      if (e instanceof ToolDenied) session.pending.delete(key);
      if (e instanceof ToolDenied)
        return {
          result: toolError(e.code, `${c.name}: ${e.message}; the call was not made.`, {
            [META.taskId]: id,
          }),
          outcome: e.code,
        };
      throw e;
    }
    await extra
      .sendNotification({
        method: "notifications/elicitation/complete",
        params: { elicitationId: id },
      })
      .catch(() => undefined);
    session.pending.delete(key);
    return { decision: await this.sidecar.decide(withApproval(req, approval)) };
  }

  private approvalRequired(
    tool: string,
    id: string,
    url: string,
    code: string,
    what: string,
  ): CallToolResult {
    return toolError(
      code,
      `${tool} ${what}. Ask an approver to open ${url} ; once approved, make the same call again (same tool, same arguments).`,
      { [META.outcome]: "needs_approval", [META.approvalUrl]: url, [META.taskId]: id },
    );
  }

  /** allow: call the upstream with the grant, cap and redact the result, report the action. */
  private async forward(
    c: CatalogTool,
    args: Record<string, unknown>,
    decision: Decision,
    resource: Entity,
    extra: Extra,
    logCall: (outcome: string, fields?: Record<string, unknown>) => void,
  ): Promise<CallToolResult> {
    const started_at = new Date().toISOString();
    let result: CallToolResult;
    let failure: { type: string; message: string } | undefined;
    /** The call failed after it reached the server: it may have run (and changed something). */
    let mayHaveRun = false;
    try {
      const raw = await c.server.callTool(
        c.upstreamName,
        args,
        decision.grant,
        { [META.decisionId]: decision.decision_id },
        extra.signal,
      );
      result = this.sanitiseResult(raw, decision);
      if (result.isError === true)
        failure = { type: "tool_error", message: logSafe(firstText(result), 4096) };
    } catch (e) {
      mayHaveRun = e instanceof CallOutcomeUnknown;
      failure = { type: errorText(e).type, message: logSafe(errorText(e).message, 1024) };
      result = toolError(
        "mcp_upstream_unavailable",
        mayHaveRun
          ? `${c.name}: the MCP server "${c.server.name}" did not answer (${failure.message}); the call may have run.`
          : `${c.name}: the MCP server "${c.server.name}" failed: ${failure.message}; the call was not made.`,
      );
    }
    try {
      await this.sidecar.reportAction({
        decision_id: decision.decision_id,
        tool: c.name,
        status: failure === undefined ? "ok" : "error",
        ...(failure !== undefined
          ? {
              error: mayHaveRun
                ? { type: "outcome_unknown", message: `the call may have run: ${failure.message}` }
                : failure,
            }
          : {}),
        // an outcome we cannot know counts as a change: the budget reservation is kept, not released
        ...(mayHaveRun
          ? { changed: [{ resource: { type: resource.type, id: resource.id } }] }
          : {}),
        started_at,
        ended_at: new Date().toISOString(),
      });
    } catch (e) {
      this.log.warn("action report failed", {
        event: "mcp.report_failed",
        tool: c.name,
        decision_id: decision.decision_id,
        error: logSafe(errorText(e).message),
      });
    }
    logCall(
      failure === undefined ? "allow" : mayHaveRun ? "allow_outcome_unknown" : "allow_error",
      {
        decision_id: decision.decision_id,
        ...(failure !== undefined ? { error: logSafe(failure.message) } : {}),
      },
    );
    result._meta = {
      ...(result._meta ?? {}),
      [META.outcome]: "allow",
      [META.decisionId]: decision.decision_id,
    };
    return result;
  }

  /**
   * The upstream's result as the agent gets it: capped, content blocks rebuilt
   * from their known fields only (no block `_meta`, no `annotations`: a
   * hostile server cannot forge `io.toolgate/*` keys), the server's `_meta`
   * dropped. Under a `redact` obligation, fail closed: `structuredContent`
   * and JSON text are redacted field by field; a block that cannot be (plain
   * text, an image, audio, a link, a binary resource) is replaced by a notice.
   */
  private sanitiseResult(raw: Record<string, unknown>, decision: Decision): CallToolResult {
    let size = 0;
    try {
      size = JSON.stringify(raw).length;
    } catch {
      size = Infinity;
    }
    if (size > this.cfg.limits.resultBytes)
      return toolError(
        "mcp_result_too_large",
        `the tool's result exceeds the proxy's limit (${this.cfg.limits.resultBytes} bytes); it was dropped.`,
      );
    if (forbiddenKey(raw) !== undefined)
      return toolError("forbidden_key", "the tool's result holds a forbidden key; it was dropped.");
    const redact = requiresRedaction(decision.obligations);
    const blocks: unknown[] = Array.isArray(raw.content) ? raw.content : [];
    let withheld = 0;
    const content: CallToolResult["content"] = blocks.map((b) => {
      const out = cleanBlock(b, redact ? decision : undefined);
      if (typeof out === "string") {
        withheld++;
        return { type: "text", text: withheldNotice(out) };
      }
      return out;
    });
    const out: CallToolResult = { content };
    if (raw.isError === true) out.isError = true;
    if (isObject(raw.structuredContent))
      out.structuredContent = applyRedactions(raw.structuredContent, decision.obligations);
    if (withheld > 0) out._meta = { [META.withheld]: withheld };
    return out;
  }
}

type Block = CallToolResult["content"][number];

function withheldNotice(what: string): string {
  return `[toolgate] withheld: ${what} cannot be redacted field by field, and the decision requires redaction (a redact obligation) — redaction_not_applicable.`;
}

const str = (v: unknown): v is string => typeof v === "string";

/** JSON text (an object or array) with the decision's redactions applied; undefined when not JSON. */
function redactJsonText(text: string, d: Decision): string | undefined {
  const t = text.trim();
  if (!t.startsWith("{") && !t.startsWith("[")) return undefined;
  try {
    return JSON.stringify(applyRedactions(JSON.parse(t) as unknown, d.obligations));
  } catch {
    return undefined;
  }
}

/**
 * One content block rebuilt from its known fields; with `redact`, a block
 * that cannot be redacted is a string naming what was withheld.
 */
function cleanBlock(b: unknown, redact: Decision | undefined): Block | string {
  if (!isObject(b)) return "a malformed content block";
  switch (b.type) {
    case "text": {
      if (!str(b.text)) return "a malformed text block";
      if (redact === undefined) return { type: "text", text: b.text };
      const r = redactJsonText(b.text, redact);
      return r === undefined
        ? "a text block that is not a JSON object or array"
        : { type: "text", text: r };
    }
    case "image":
    case "audio":
      if (redact !== undefined) return `an ${b.type} block`;
      if (!str(b.data) || !str(b.mimeType)) return `a malformed ${b.type} block`;
      return { type: b.type, data: b.data, mimeType: b.mimeType };
    case "resource_link": {
      if (redact !== undefined) return "a resource link";
      if (!str(b.uri) || !str(b.name)) return "a malformed resource link";
      const l: Record<string, unknown> = { type: "resource_link", uri: b.uri, name: b.name };
      for (const k of ["title", "description", "mimeType"]) if (str(b[k])) l[k] = b[k];
      if (typeof b.size === "number") l.size = b.size;
      return l as Block;
    }
    case "resource": {
      const r = b.resource;
      if (!isObject(r) || !str(r.uri)) return "a malformed embedded resource";
      const res: Record<string, unknown> = { uri: r.uri };
      if (str(r.mimeType)) res.mimeType = r.mimeType;
      if (str(r.text)) {
        if (redact === undefined) res.text = r.text;
        else {
          const t = redactJsonText(r.text, redact);
          if (t === undefined)
            return "an embedded resource whose text is not a JSON object or array";
          res.text = t;
        }
      } else if (str(r.blob)) {
        if (redact !== undefined) return "an embedded binary resource";
        res.blob = r.blob;
      } else return "a malformed embedded resource";
      return { type: "resource", resource: res } as Block;
    }
    default:
      return "a content block of an unknown type";
  }
}

function urlElicitation(server: Server): boolean {
  const caps = server.getClientCapabilities();
  return isObject(caps?.elicitation) && isObject(caps.elicitation.url);
}

function withApproval(req: DecisionRequest, approval: Approval): DecisionRequest {
  return { ...req, context: { ...(req.context ?? {}), approval } };
}

function firstText(r: CallToolResult): string {
  const t = r.content.find((b) => b.type === "text");
  return t !== undefined && t.type === "text" ? t.text : "the tool reported an error";
}
