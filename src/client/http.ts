import { ToolgateError } from "./errors";
import type { ErrorBody } from "./types";

/** fetch's answer (named through fetch: the global `Response` type differs between lib setups). */
type FetchResponse = Awaited<ReturnType<typeof fetch>>;

/** A token, or a function giving one per call (e.g. refreshed). */
export type TokenSource = string | (() => string | Promise<string>);

export interface HttpOptions {
  url: string;
  token?: TokenSource;
  fetch?: typeof fetch;
  timeoutMs?: number;
  headers?: Record<string, string>;
}

export interface CallOptions {
  signal?: AbortSignal | undefined;
  headers?: Record<string, string>;
}

/** The abort reason as the rejection (an `AbortError` DOMException unless the caller chose one). */
export function abortReason(signal: AbortSignal): unknown {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error("This operation was aborted");
  e.name = "AbortError";
  return e;
}

/**
 * One signal that aborts when any of the given ones does (AbortSignal.any
 * where the runtime has it, else by hand), with a `dispose` that drops the
 * listeners added by hand.
 */
export function anySignal(signals: Array<AbortSignal | undefined>): {
  signal: AbortSignal | undefined;
  dispose: () => void;
} {
  const list = signals.filter((s): s is AbortSignal => s !== undefined);
  if (list.length === 0) return { signal: undefined, dispose: () => {} };
  if (list.length === 1) return { signal: list[0], dispose: () => {} };
  const any = (AbortSignal as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (typeof any === "function") return { signal: any.call(AbortSignal, list), dispose: () => {} };
  const ctl = new AbortController();
  const off: Array<() => void> = [];
  for (const s of list) {
    if (s.aborted) {
      ctl.abort(s.reason);
      break;
    }
    const on = () => ctl.abort(s.reason);
    s.addEventListener("abort", on, { once: true });
    off.push(() => s.removeEventListener("abort", on));
  }
  return { signal: ctl.signal, dispose: () => off.forEach((f) => f()) };
}

/** Resolves after `ms`, or rejects with the abort reason when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    // the abort reason as given (an AbortError unless the caller chose another)
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
    if (signal?.aborted) return reject(abortReason(signal));
    const done = () => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    };
    const t = setTimeout(done, ms);
    const onAbort = () => {
      clearTimeout(t);
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
      reject(abortReason(signal as AbortSignal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function retryAfterOf(res: FetchResponse, body: unknown): number | undefined {
  const b = body as Partial<ErrorBody> | undefined;
  if (typeof b?.retry_after === "number" && b.retry_after >= 0) return b.retry_after;
  const h = res.headers.get("retry-after");
  if (h !== null && /^\d+$/.test(h.trim())) return Number(h.trim());
  return undefined;
}

/** toolgate's answers are small; anything larger is not toolgate. */
const MAX_BODY_CHARS = 4 * 1024 * 1024;

/**
 * One JSON call to toolgate. 2xx → the parsed body; an error status →
 * ToolgateError with the body's `code`; no answer → `network_error`; no
 * answer within `timeoutMs` → `timeout`; the caller's signal aborted → its
 * reason (an AbortError), untouched.
 */
export async function callJson(
  o: HttpOptions,
  method: "GET" | "POST",
  path: string,
  body: unknown,
  call: CallOptions = {},
): Promise<{ status: number; body: unknown }> {
  const callerSignal = call.signal;
  if (callerSignal?.aborted) throw abortReason(callerSignal);
  const timeoutMs = o.timeoutMs ?? 5000;
  const timer = new AbortController();
  const t = setTimeout(() => timer.abort(), timeoutMs);
  const both = anySignal([callerSignal, timer.signal]);
  const timedOut = () => timer.signal.aborted && !callerSignal?.aborted;
  try {
    const headers: Record<string, string> = { accept: "application/json", ...o.headers };
    Object.assign(headers, call.headers);
    if (o.token !== undefined) {
      const tok = typeof o.token === "function" ? await o.token() : o.token;
      if (tok !== "") headers.authorization = `Bearer ${tok}`;
    }
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (both.signal !== undefined) init.signal = both.signal;
    const doFetch = o.fetch ?? globalThis.fetch;
    const url = o.url.replace(/\/+$/, "") + path;
    let res: FetchResponse;
    let text: string;
    try {
      res = await doFetch(url, init);
      text = await res.text();
    } catch (e) {
      if (callerSignal?.aborted) throw abortReason(callerSignal);
      if (timedOut())
        throw new ToolgateError(
          "timeout",
          0,
          `toolgate did not answer ${method} ${path} within ${timeoutMs} ms`,
          {
            cause: e,
          },
        );
      const why = e instanceof Error ? e.message : String(e);
      throw new ToolgateError("network_error", 0, `toolgate unreachable at ${o.url}: ${why}`, {
        cause: e,
      });
    }
    const requestId = res.headers.get("x-request-id") ?? undefined;
    const rid = requestId === undefined ? {} : { requestId };
    let parsed: unknown = undefined;
    if (text.length > MAX_BODY_CHARS)
      throw new ToolgateError(
        "invalid_response",
        res.status,
        `answer of ${method} ${path} is too large`,
        rid,
      );
    if (text !== "") {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (res.ok)
          throw new ToolgateError(
            "invalid_response",
            res.status,
            `answer of ${method} ${path} is not JSON`,
            rid,
          );
      }
    }
    if (!res.ok) {
      const b = parsed as Partial<ErrorBody> | undefined;
      const code = typeof b?.code === "string" ? b.code : `http_${res.status}`;
      const msg =
        typeof b?.message === "string" ? b.message : `${method} ${path}: HTTP ${res.status}`;
      const ra = retryAfterOf(res, parsed);
      throw new ToolgateError(code, res.status, msg, {
        ...rid,
        ...(ra === undefined ? {} : { retryAfter: ra }),
      });
    }
    if (parsed === undefined || typeof parsed !== "object" || parsed === null)
      throw new ToolgateError(
        "invalid_response",
        res.status,
        `answer of ${method} ${path} is not a JSON object`,
        rid,
      );
    return { status: res.status, body: parsed };
  } finally {
    clearTimeout(t);
    both.dispose();
  }
}
