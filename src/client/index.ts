/**
 * toolgate/client — ask the toolgate sidecar before every tool call.
 *
 *   const tg = createClient({ url: "http://127.0.0.1:8181" });
 *   const refund = tg.guard("refunds.issue", issueRefund, (a) => ({ subject, resource, context }));
 *   await refund({ amount: 20 });   // decided, run, reported; ToolDenied when it must not run
 *
 * `fetch` only, no Node module: runs in Node ≥ 20, Bun, Deno and browsers.
 */
import { ToolDenied, ToolgateError } from "./errors";
import {
  abortReason,
  anySignal,
  callJson,
  sleep,
  type CallOptions,
  type TokenSource,
} from "./http";
import { redactResult, unknownObligation } from "./obligations";
import type {
  AccessRequestBody,
  AccessRequestTask,
  ActionReport,
  ActionSearchRequest,
  ActionSearchResponse,
  Approval,
  Decision,
  DecisionContext,
  DecisionRequest,
  Entity,
} from "./types";

export { ToolDenied, ToolgateError } from "./errors";
export {
  applyRedactions,
  CLIENT_OBLIGATIONS,
  notRedactable,
  redactResult,
  requiresRedaction,
  unknownObligation,
} from "./obligations";
export type { TokenSource } from "./http";
export type * from "./types";

export interface ClientOptions {
  /** The sidecar's agent port, e.g. http://127.0.0.1:8181. */
  url: string;
  /** Sent as `Authorization: Bearer …` on every call (identity mode jwt: the user's token). */
  token?: TokenSource;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** Per HTTP call (default 5000): a slower answer is ToolgateError `timeout`. */
  timeoutMs?: number;
  /** Extra headers on every call (e.g. `traceparent`). */
  headers?: Record<string, string>;
}

export interface SignalOptions {
  signal?: AbortSignal;
}

export interface RequestAccessOptions extends SignalOptions {
  /** The agent's words for the approver (≤ 2000 characters, no control characters but tab and newline). */
  justification?: string;
  /** Names this submission (1–255 characters): the same key again returns the task it created. */
  idempotencyKey?: string;
}

export interface WaitOptions extends SignalOptions {
  /** Give up (ToolDenied `approval_expired`) at this time even if the task is still pending. */
  expiresAt?: string | Date | number;
  /** Called after every poll with the task. */
  onProgress?: (task: AccessRequestTask) => void;
  /** First delay between polls (default 500 ms); doubles per poll, with jitter. */
  minDelayMs?: number;
  /** Longest delay between polls (default 10000 ms). */
  maxDelayMs?: number;
  /** Cancel the task (best effort) when `signal` aborts. Default false; guard sets it. */
  cancelOnAbort?: boolean;
}

/** What `describe(args)` tells guard about one call. */
export interface CallDescription {
  subject: Entity;
  resource: Entity;
  context?: DecisionContext;
  /**
   * The tool's arguments as the policy should see them; default: `args` when it is a plain
   * object. When given and different from `args`, these are what the guarded function runs
   * with (a frozen copy): the call that runs is the call that was decided.
   */
  arguments?: Record<string, unknown>;
  /** Shown to the approver when the call needs an approval. */
  justification?: string;
  /** The agent's id for this call (action.properties.call_id and the report's call_id). */
  callId?: string;
}

/** What the guarded function receives besides its arguments. */
export interface GuardCall {
  decision: Decision;
  /** The allow's grant (when grants are enabled): pass it to the tool backend. */
  grant?: string;
  signal?: AbortSignal;
}

export interface GuardOptions<A, R> extends SignalOptions {
  /** Progress while waiting for an approval: the submitted task, then every poll. */
  onProgress?: (task: AccessRequestTask) => void;
  /** needs_approval: "wait" (default) submits the access request and waits; "throw" submits it and throws ToolDenied `approval_required` with the task. */
  approval?: "wait" | "throw";
  /** Adds to the action report after a successful call (read, changed, …). */
  report?: (result: R, args: A) => Partial<ActionReport>;
  /** The action report could not be sent (the call already ran, so its result is still returned). */
  onReportError?: (error: unknown) => void;
  /** Passed to waitForApproval. */
  minDelayMs?: number;
  maxDelayMs?: number;
}

export type Guarded<A, R> = (args: A, callOpts?: SignalOptions) => Promise<R>;

export interface ToolgateClient {
  decide(req: DecisionRequest, opts?: SignalOptions): Promise<Decision>;
  searchActions(req: ActionSearchRequest, opts?: SignalOptions): Promise<ActionSearchResponse>;
  requestAccess(
    req: DecisionRequest,
    evaluationId: string,
    opts?: RequestAccessOptions,
  ): Promise<AccessRequestTask>;
  getAccessRequest(id: string, opts?: SignalOptions): Promise<AccessRequestTask>;
  cancelAccessRequest(id: string, opts?: SignalOptions): Promise<AccessRequestTask>;
  waitForApproval(taskId: string, opts?: WaitOptions): Promise<Approval>;
  reportAction(report: ActionReport, opts?: SignalOptions): Promise<unknown>;
  guard<A, R>(
    toolName: string,
    fn: (args: A, call: GuardCall) => Promise<R> | R,
    describe: (args: A) => CallDescription,
    opts?: GuardOptions<A, R>,
  ): Guarded<A, R>;
}

const isPlain = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function timeOf(t: string | Date | number | undefined): number | undefined {
  if (t === undefined) return undefined;
  const ms = t instanceof Date ? t.getTime() : typeof t === "number" ? t : Date.parse(t);
  return Number.isFinite(ms) ? ms : undefined;
}

function sig(o: SignalOptions | undefined): CallOptions {
  return o?.signal === undefined ? {} : { signal: o.signal };
}

function expectTask(body: unknown): AccessRequestTask {
  const t = (body as Partial<AccessRequestTask>).task;
  if (!isPlain(t) || typeof t.id !== "string" || typeof t.status !== "string")
    throw new ToolgateError("invalid_response", 200, "access request answer carries no task");
  return body as AccessRequestTask;
}

function expectDecision(body: unknown): Decision {
  const d = body as Partial<Decision>;
  if (
    typeof d.decision_id !== "string" ||
    (d.outcome !== "allow" && d.outcome !== "deny" && d.outcome !== "needs_approval") ||
    !Array.isArray(d.reasons) ||
    !Array.isArray(d.obligations)
  )
    throw new ToolgateError("invalid_response", 200, "decision answer is not a toolgate decision");
  return body as Decision;
}

const FINAL_CODES: Record<string, string> = {
  denied: "approval_denied",
  cancelled: "approval_cancelled",
  expired: "approval_expired",
  failed: "approval_failed",
};

/** Transient while polling: the sidecar restarting or busy. Anything else ends the wait. */
function transient(e: unknown): boolean {
  return (
    e instanceof ToolgateError &&
    (e.status === 0 || e.status === 429 || e.status === 502 || e.status === 503 || e.status === 504)
  );
}

/** Sorted-key JSON: equal for equal JSON-like values. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (isPlain(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(",")}}`;
  return JSON.stringify(v) ?? "undefined";
}

/** A frozen deep copy: what the policy decides on is what the function runs with, unchanged. */
function frozenCopy<T>(v: T): T {
  let copy: T;
  try {
    copy = structuredClone(v);
  } catch (e) {
    throw new TypeError(
      `guard: the call's arguments cannot be copied (${(e as Error).message}); pass data (objects, arrays, strings, numbers), not functions or handles`,
    );
  }
  const freeze = (x: unknown): void => {
    if (typeof x !== "object" || x === null || Object.isFrozen(x)) return;
    Object.freeze(x);
    for (const y of Object.values(x)) freeze(y);
  };
  freeze(copy);
  return copy;
}

function errorText(e: unknown): { type: string; message: string } {
  const type = e instanceof Error ? e.name : typeof e;
  const message = e instanceof Error ? e.message : String(e);
  return { type: type.slice(0, 256), message: message.slice(0, 4096) };
}

/** A client for one toolgate sidecar's agent port. */
export function createClient(options: ClientOptions): ToolgateClient {
  if (typeof options?.url !== "string" || !/^https?:\/\//.test(options.url))
    throw new TypeError(
      "createClient: url must be the sidecar's http(s) base URL, e.g. http://127.0.0.1:8181",
    );
  if (options.timeoutMs !== undefined && !(options.timeoutMs > 0))
    throw new TypeError("createClient: timeoutMs must be a number > 0");
  const http = { ...options };

  const client: ToolgateClient = {
    async decide(req, opts) {
      const r = await callJson(http, "POST", "/v1/decisions", req, sig(opts));
      return expectDecision(r.body);
    },

    async searchActions(req, opts) {
      const r = await callJson(http, "POST", "/access/v1/search/action", req, sig(opts));
      const b = r.body as Partial<ActionSearchResponse>;
      if (!Array.isArray(b.results))
        throw new ToolgateError(
          "invalid_response",
          r.status,
          "action search answer carries no results",
        );
      return r.body as ActionSearchResponse;
    },

    async requestAccess(req, evaluationId, opts = {}) {
      const body: AccessRequestBody = { ...req, denial: { evaluation_id: evaluationId } };
      if (opts.justification !== undefined) body.justification = opts.justification;
      const call: CallOptions = sig(opts);
      if (opts.idempotencyKey !== undefined)
        call.headers = { "idempotency-key": opts.idempotencyKey };
      const r = await callJson(http, "POST", "/access/v1/requests", body, call);
      return expectTask(r.body);
    },

    async getAccessRequest(id, opts) {
      const r = await callJson(
        http,
        "GET",
        `/access/v1/requests/${encodeURIComponent(id)}`,
        undefined,
        sig(opts),
      );
      return expectTask(r.body);
    },

    async cancelAccessRequest(id, opts) {
      const path = `/access/v1/requests/${encodeURIComponent(id)}/cancel`;
      const r = await callJson(http, "POST", path, undefined, sig(opts));
      return expectTask(r.body);
    },

    async waitForApproval(taskId, opts = {}) {
      const min = Math.max(1, opts.minDelayMs ?? 500);
      const max = Math.max(min, opts.maxDelayMs ?? 10_000);
      const signal = opts.signal;
      const cap = timeOf(opts.expiresAt);
      let delay = min;
      let last: AccessRequestTask | undefined;
      try {
        for (;;) {
          let task: AccessRequestTask | undefined;
          try {
            task = await client.getAccessRequest(taskId, signal === undefined ? {} : { signal });
          } catch (e) {
            if (!transient(e)) throw e;
          }
          if (task !== undefined) {
            last = task;
            opts.onProgress?.(task);
            const s = task.task.status;
            if (s === "approved") {
              const approval = task.result?.approval;
              if (approval === undefined)
                throw new ToolgateError(
                  "invalid_response",
                  200,
                  `task ${taskId} is approved but carries no approval`,
                );
              return approval;
            }
            if (s !== "pending")
              throw new ToolDenied(
                FINAL_CODES[s] ?? `approval_${s}`,
                `access request ${taskId} was ${s}`,
                {
                  task,
                },
              );
          }
          const taskEnd = timeOf(last?.task.expires_at);
          const deadline = Math.min(cap ?? Infinity, taskEnd ?? Infinity);
          const left = deadline - Date.now();
          if (left <= 0)
            throw new ToolDenied(
              "approval_expired",
              `access request ${taskId} was not approved in time`,
              {
                ...(last === undefined ? {} : { task: last }),
              },
            );
          // full jitter over the upper half: polls of many agents do not align
          const wait = Math.min(left, delay * (0.5 + Math.random() * 0.5));
          await sleep(Math.max(1, wait), signal);
          delay = Math.min(max, delay * 2);
        }
      } catch (e) {
        if (signal?.aborted && opts.cancelOnAbort) {
          // best effort, with its own timeout: the caller's signal is already aborted
          await client.cancelAccessRequest(taskId).catch(() => undefined);
        }
        throw e;
      }
    },

    async reportAction(report, opts) {
      const r = await callJson(http, "POST", "/v1/actions", report, sig(opts));
      return r.body;
    },

    guard<A, R>(
      toolName: string,
      fn: (args: A, call: GuardCall) => Promise<R> | R,
      describe: (args: A) => CallDescription,
      gopts: GuardOptions<A, R> = {},
    ): Guarded<A, R> {
      if (typeof toolName !== "string" || toolName === "")
        throw new TypeError("guard: toolName must be the tool's name, e.g. refunds.issue");
      return async (args: A, callOpts: SignalOptions = {}): Promise<R> => {
        const joined = anySignal([gopts.signal, callOpts.signal]);
        const signal = joined.signal;
        const so: SignalOptions = signal === undefined ? {} : { signal };
        try {
          // one frozen copy, taken before deciding: the caller changing its object during an
          // approval wait changes nothing; describe's arguments, when they differ, are what runs
          const snapshot = frozenCopy(args);
          const d = describe(snapshot);
          let runArgs: A = snapshot;
          let argsForPolicy: Record<string, unknown> | undefined = isPlain(snapshot)
            ? snapshot
            : undefined;
          if (d.arguments !== undefined) {
            argsForPolicy = frozenCopy(d.arguments);
            if (canonical(argsForPolicy) !== canonical(snapshot))
              runArgs = argsForPolicy as unknown as A;
          }
          const props: NonNullable<DecisionRequest["action"]["properties"]> = {};
          if (argsForPolicy !== undefined) props.arguments = argsForPolicy;
          if (d.callId !== undefined) props.call_id = d.callId;
          const req: DecisionRequest = {
            subject: d.subject,
            action:
              Object.keys(props).length > 0
                ? { name: toolName, properties: props }
                : { name: toolName },
            resource: d.resource,
          };
          if (d.context !== undefined) req.context = d.context;

          let decision = await client.decide(req, so);
          if (decision.outcome === "needs_approval") {
            decision = await approveThenAsk(req, decision, d.justification, so);
          }
          if (decision.outcome !== "allow") throw ToolDenied.fromDecision(decision);
          const odd = unknownObligation(decision.obligations);
          if (odd !== undefined)
            throw new ToolDenied(
              "unknown_obligation",
              `${toolName}: the decision carries an obligation this client cannot honour: "${odd.type}" (id "${odd.id}")`,
              { decision },
            );
          if (signal?.aborted) throw abortReason(signal);

          const call: GuardCall = { decision };
          if (decision.grant !== undefined) call.grant = decision.grant;
          if (signal !== undefined) call.signal = signal;
          const started_at = new Date().toISOString();
          const base = { decision_id: decision.decision_id, tool: toolName, started_at };
          const withCall = d.callId === undefined ? base : { ...base, call_id: d.callId };
          let result: R;
          try {
            result = await fn(runArgs, call);
          } catch (e) {
            await send({
              ...withCall,
              status: "error",
              error: errorText(e),
              ended_at: new Date().toISOString(),
            });
            throw e;
          }
          let extra: Partial<ActionReport> = {};
          try {
            extra = gopts.report?.(result, runArgs) ?? {};
          } catch (e) {
            gopts.onReportError?.(e);
          }
          await send({
            ...withCall,
            status: "ok",
            ended_at: new Date().toISOString(),
            ...extra,
            decision_id: decision.decision_id,
          });
          const out = redactResult(result, decision.obligations);
          if ("withheld" in out)
            throw new ToolDenied(
              "redaction_not_applicable",
              `${toolName}: the decision requires redaction (redact obligation) but the result is ${out.withheld}, which cannot be redacted field by field; the tool ran (reported), its result is withheld`,
              { decision },
            );
          return out.value;
        } finally {
          joined.dispose();
        }
      };

      async function send(report: ActionReport): Promise<void> {
        // not bound to the caller's signal: the call ran, its report must still go out
        try {
          await client.reportAction(report);
        } catch (e) {
          gopts.onReportError?.(e);
        }
      }

      async function approveThenAsk(
        req: DecisionRequest,
        decision: Decision,
        justification: string | undefined,
        so: SignalOptions,
      ): Promise<Decision> {
        const ar = decision.access_request;
        if (ar === undefined) throw ToolDenied.fromDecision(decision);
        const until = timeOf(ar.expires_at);
        if (until !== undefined && until <= Date.now())
          throw new ToolDenied(
            "approval_expired",
            `${toolName}: the evaluation expired before it was requested`,
            {
              decision,
            },
          );
        const ra: RequestAccessOptions = { ...so };
        if (justification !== undefined) ra.justification = justification;
        const task = await client.requestAccess(req, ar.evaluation_id, ra);
        gopts.onProgress?.(task);
        if (gopts.approval === "throw") {
          throw new ToolDenied(
            "approval_required",
            `${toolName} needs an approval: access request ${task.task.id} (${task.task.status})`,
            { decision, task },
          );
        }
        const wait: WaitOptions = { ...so, cancelOnAbort: true };
        if (gopts.onProgress !== undefined) wait.onProgress = gopts.onProgress;
        if (gopts.minDelayMs !== undefined) wait.minDelayMs = gopts.minDelayMs;
        if (gopts.maxDelayMs !== undefined) wait.maxDelayMs = gopts.maxDelayMs;
        const approval = await client.waitForApproval(task.task.id, wait);
        const again: DecisionRequest = { ...req, context: { ...req.context, approval } };
        const d2 = await client.decide(again, so);
        if (d2.outcome !== "allow") throw ToolDenied.fromDecision(d2, task);
        return d2;
      }
    },
  };
  return client;
}
