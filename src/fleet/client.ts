/**
 * FleetClient: a sidecar's connection to `toolgate control` (fleet mode,
 * `fleet.url`). One component that
 *
 * - keeps the kill switches that concern this agent, from the event stream
 *   GET /fleet/v1/stream: each `snapshot` replaces the cache, each `change`
 *   (in seq order; an older or repeated seq is ignored) creates or deletes
 *   one switch, `ping` only says the stream is alive;
 * - keeps the staleness clock: the time since the last event of any kind.
 *   Before the first snapshot, or once the last event is older than
 *   `fleet.max_staleness_seconds`, the cache is stale (FleetContainment then
 *   denies approve/execute/admin-class tools, and this component's status
 *   takes the sidecar out of /health/ready);
 * - reconnects whenever the stream ends, fails, says something malformed or
 *   stays silent too long, backing off 100 ms doubling to 2 s (reset by a
 *   snapshot);
 * - makes the JSON calls of the sidecar API (`call`), with a timeout, the
 *   answer parsed as hostile input and checked before use;
 * - says hello (POST /fleet/v1/hello) after each snapshot and when the active
 *   bundle changes, best effort.
 *
 * Every request carries the credential (./credential.ts) and
 * `X-Toolgate-Instance`, a random id of this process.
 */
import { randomBytes } from "node:crypto";
import { ERRORS, isToolgateError, toolgateError, type ErrorCode } from "../errors";
import type { SwitchRow } from "../containment/store";
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { Logger } from "../shared/log";
import { parseUntrustedJson } from "../shared/guards";
import type { Credential } from "./credential";
import { SseParser, type SseEvent } from "./sse";
import { int, member, obj, str, switchFromWire, WireError } from "./wire";

export interface FleetClientOptions {
  /** The control service, e.g. http://control:8182 (fleet.url). */
  url: string;
  agentId: string;
  maxStalenessSeconds: number;
  credential: Credential;
  log: Logger;
  /** toolgate's version, for hello. */
  version: string;
  /** The active bundle, for hello (null: none yet). */
  bundle?: () => { name: string; revision: string | null } | null;
  now?: () => number;
  fetch?: typeof fetch;
  /** Timeout of each JSON call (default 2000 ms). */
  callTimeoutMs?: number;
  /** The stream is dropped and reconnected after this long without a byte (default 6000 ms; pings come every 2 s). */
  idleTimeoutMs?: number;
  /** Reconnect backoff (default 100 ms doubling to 2000 ms). */
  backoffMs?: { first: number; max: number };
  /** The process's instance id (default random). */
  instance?: string;
}

/** Error codes of the control service a sidecar passes on to its agent as they are. */
const PASSED_ON: ReadonlySet<string> = new Set([
  "approval_not_found",
  "approval_not_pending",
  "approval_not_approved",
  "approval_expired",
  "idempotency_conflict",
  "access_request_closed",
  "access_request_rate_limited",
  "invalid_denial_binding",
]);

/** Answers larger than this are refused (the biggest is a task with its evaluation). */
const MAX_ANSWER_BYTES = 4 << 20;

/** Where the stream stands, for containment and status. */
export type Freshness =
  | { fresh: true }
  | {
      fresh: false;
      /** No snapshot yet since start. */
      neverSynced: boolean;
      /** ms since the last event (or since start when never synced). */
      silentForMs: number;
    };

export class FleetClient implements Component {
  readonly name = "fleet";
  readonly url: string;
  readonly instance: string;
  private readonly opts: FleetClientOptions;
  private readonly now: () => number;
  private readonly fetchFn: typeof fetch;
  private readonly maxStaleMs: number;
  private cache = new Map<string, SwitchRow>();
  private cacheList: SwitchRow[] = [];
  private seq = -1;
  private synced = false;
  private lastEventAt: number | undefined;
  /**
   * The same moment on the monotonic clock: silence is the larger of the two
   * measures, so a wall clock stepped back (NTP, a resumed VM) never makes a
   * dead stream look fresh.
   */
  private lastEventMono = 0;
  private createdAt: number;
  private connected = false;
  private lastError: string | undefined;
  private started = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private current: AbortController | undefined;
  private readonly stopSignal = new AbortController();
  private readonly inFlight = new Set<Promise<unknown>>();
  private helloBundle: string | undefined;

  constructor(opts: FleetClientOptions) {
    this.opts = opts;
    this.url = opts.url.replace(/\/+$/, "");
    this.now = opts.now ?? Date.now;
    this.fetchFn = opts.fetch ?? fetch;
    this.maxStaleMs = opts.maxStalenessSeconds * 1000;
    this.instance = opts.instance ?? `sc_${randomBytes(9).toString("base64url")}`;
    this.createdAt = this.now();
  }

  // -- lifecycle -----------------------------------------------------------------

  /** Starts the stream in the background: a control service that is down never blocks a start. */
  start(): Promise<void> {
    if (!this.started && !this.stopped) {
      this.started = true;
      this.createdAt = this.now();
      this.loop = this.run();
    }
    return Promise.resolve();
  }

  /** Drops the stream and waits for it and for calls in flight (each bounded by its timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopSignal.abort();
    this.current?.abort();
    await this.loop;
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /**
   * NOT_READY until the first snapshot; OK while the stream is fresh; ERROR
   * once it is stale (approve/execute/admin-class tools are denied then).
   */
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    const f = this.freshness(this.now());
    if (f.fresh) return { state: "OK" };
    const why = this.lastError !== undefined ? `: ${this.lastError}` : "";
    if (f.neverSynced) {
      return {
        state: "NOT_READY",
        detail: `no kill-switch snapshot yet from ${this.url} (waiting ${secs(f.silentForMs)} s${why}); approve-, execute- and admin-class tools are denied (containment_stale)`,
      };
    }
    return {
      state: "ERROR",
      detail: `the kill-switch stream from ${this.url} has been silent for ${secs(f.silentForMs)} s (max ${this.opts.maxStalenessSeconds} s${why}); approve-, execute- and admin-class tools are denied (containment_stale), reads go on`,
    };
  }

  // -- the switch cache ------------------------------------------------------------

  /** The switches of the last snapshot and the changes since (expiry is the reader's to check). */
  switches(): readonly SwitchRow[] {
    return this.cacheList;
  }

  /** Whether the cache may be trusted at `nowMs`. */
  freshness(nowMs: number): Freshness {
    if (!this.synced || this.lastEventAt === undefined) {
      return { fresh: false, neverSynced: true, silentForMs: Math.max(0, nowMs - this.createdAt) };
    }
    const silent = this.silentMs(nowMs);
    if (silent <= this.maxStaleMs) return { fresh: true };
    return { fresh: false, neverSynced: false, silentForMs: silent };
  }

  /** Time since the stream's last event: the wall clock's measure or the monotonic one, the larger. */
  private silentMs(nowMs: number): number {
    const wall = nowMs - (this.lastEventAt ?? nowMs);
    return Math.max(0, wall, performance.now() - this.lastEventMono);
  }

  /** The last change (or snapshot) sequence number applied; -1 before the first snapshot. */
  lastSeq(): number {
    return this.seq;
  }

  isConnected(): boolean {
    return this.connected;
  }

  /** What /v1/status shows of the fleet: the control service, this instance, the stream. */
  view(): Record<string, unknown> {
    const now = this.now();
    const f = this.freshness(now);
    return {
      url: this.url,
      instance: this.instance,
      connected: this.connected,
      synced: this.synced,
      stale: !f.fresh,
      seq: this.seq,
      switches: this.cacheList.length,
      last_event_at:
        this.lastEventAt === undefined ? null : new Date(this.lastEventAt).toISOString(),
      max_staleness_seconds: this.opts.maxStalenessSeconds,
      ...(this.lastError !== undefined ? { last_error: this.lastError } : {}),
    };
  }

  /** Seconds since the last event (since start before the first snapshot). */
  silentSeconds(nowMs: number = this.now()): number {
    return (
      (this.lastEventAt === undefined
        ? Math.max(0, nowMs - this.createdAt)
        : this.silentMs(nowMs)) / 1000
    );
  }

  // -- JSON calls -------------------------------------------------------------------

  /**
   * One call of the sidecar API: `body` as JSON (POST), the answer parsed as
   * untrusted JSON and handed to `parse`, which checks it. Rejects with the
   * control's own code for the approval refusals an agent should see
   * (approval_not_found, access_request_rate_limited …), else
   * `fleet_unavailable` (unreachable, timed out, refused, malformed).
   */
  async call<T>(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    parse: (v: unknown) => T,
    what: string,
  ): Promise<T> {
    const p = this.callOnce(method, path, body, parse, what);
    this.inFlight.add(p);
    try {
      return await p;
    } finally {
      this.inFlight.delete(p);
    }
  }

  private async callOnce<T>(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    parse: (v: unknown) => T,
    what: string,
  ): Promise<T> {
    const timeoutMs = this.opts.callTimeoutMs ?? 2000;
    let status: number;
    let text: string;
    // Not AbortSignal.timeout: its timer cannot be cancelled, so every call's would still
    // fire (an abort event and a DOMException) timeoutMs later, in the middle of later decisions.
    const ac = new AbortController();
    const timer = setTimeout(
      () => ac.abort(new DOMException(`no answer within ${timeoutMs} ms`, "TimeoutError")),
      timeoutMs,
    );
    timer.unref();
    try {
      const headers = await this.headers();
      if (body !== undefined) headers["content-type"] = "application/json";
      const res = await this.fetchFn(`${this.url}${path}`, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: ac.signal,
        redirect: "error",
      });
      status = res.status;
      text = await readCapped(res, MAX_ANSWER_BYTES);
    } catch (e) {
      if (isToolgateError(e)) throw e;
      const err = e as Error;
      const why =
        err.name === "TimeoutError" || err.name === "AbortError"
          ? `no answer within ${timeoutMs} ms`
          : causeMessage(err);
      throw toolgateError("fleet_unavailable", `${what}: ${this.url} unreachable: ${why}`, {
        cause: e,
      });
    } finally {
      clearTimeout(timer);
    }
    let value: unknown;
    try {
      value = parseUntrustedJson(text);
    } catch (e) {
      throw toolgateError(
        "fleet_unavailable",
        `${what}: the control service answered ${status} with a body that is not usable JSON: ${(e as Error).message}`,
        { cause: e },
      );
    }
    if (status < 200 || status > 299) throw this.refusal(status, value, what);
    try {
      return parse(value);
    } catch (e) {
      throw toolgateError(
        "fleet_unavailable",
        `${what}: the control service's answer is malformed: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  /** A non-2xx answer as the error to throw. */
  private refusal(status: number, value: unknown, what: string): Error {
    let code: string | undefined;
    let message = "";
    let retryAfter: number | undefined;
    try {
      const o = obj(value, "error");
      code = str(o, "code", "error", 64);
      message = str(o, "message", "error", 2000);
      const r = member(o, "retry_after");
      if (typeof r === "number" && Number.isSafeInteger(r) && r >= 0 && r <= 86_400) retryAfter = r;
    } catch {
      // no usable error body: unavailable below
    }
    if (code !== undefined && PASSED_ON.has(code) && code in ERRORS) {
      return toolgateError(code as ErrorCode, message || undefined, {
        ...(retryAfter !== undefined ? { retry_after: retryAfter } : {}),
      });
    }
    return toolgateError(
      "fleet_unavailable",
      `${what}: the control service answered ${status}${code !== undefined ? ` ${code}: ${message}` : ""}`,
    );
  }

  private async headers(): Promise<Record<string, string>> {
    return {
      authorization: `Bearer ${await this.opts.credential()}`,
      "x-toolgate-instance": this.instance,
      accept: "application/json",
    };
  }

  /**
   * A call in the background: retried (`attempts`, 250 ms doubling) while the
   * control cannot be reached; the last failure goes to `onFail`. Stops
   * retrying once the client stops. Tracked: stop() waits for it.
   */
  background<T>(
    run: () => Promise<T>,
    onDone: (v: T) => void,
    onFail: (e: Error) => void,
    attempts = 3,
  ): void {
    const p = (async () => {
      let delay = 250;
      for (let i = 1; ; i++) {
        try {
          onDone(await run());
          return;
        } catch (e) {
          const err = e as Error;
          const retriable = isToolgateError(err) && err.code === "fleet_unavailable";
          if (!retriable || i >= attempts || this.stopped) {
            onFail(err);
            return;
          }
        }
        await sleep(delay, this.stopSignal.signal);
        delay *= 2;
      }
    })();
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  // -- the stream ---------------------------------------------------------------------

  private async run(): Promise<void> {
    const { first, max } = this.opts.backoffMs ?? { first: 100, max: 2000 };
    let delay = first;
    let failures = 0;
    while (!this.stopped) {
      const ac = new AbortController();
      this.current = ac;
      let snapshot = false;
      let ended = false;
      try {
        await this.connect(ac, () => {
          snapshot = true;
          delay = first;
          if (failures > 0 || this.lastError !== undefined) {
            this.opts.log.info("fleet: kill-switch stream connected", {
              event: "fleet.stream_connected",
              url: this.url,
              seq: this.seq,
              switches: this.cacheList.length,
            });
          }
          failures = 0;
          this.lastError = undefined;
        });
        ended = true;
      } catch (e) {
        if (this.stopped) break;
        this.lastError = causeMessage(e as Error);
      }
      this.connected = false;
      if (this.stopped) break;
      if (ended && snapshot) {
        // closed by the control service after it served (a replica stopping, the credential
        // that opened it expiring): not a failure, reconnect at once with a fresh credential
        this.opts.log.debug(
          "fleet: the control service ended the kill-switch stream; reconnecting",
          {
            event: "fleet.stream_ended",
            url: this.url,
          },
        );
      } else if (++failures === 1) {
        this.lastError ??= "the stream ended before its snapshot";
        this.opts.log.warn("fleet: kill-switch stream lost; reconnecting", {
          event: "fleet.stream_lost",
          url: this.url,
          error: this.lastError,
          had_snapshot: snapshot,
        });
      }
      await sleep(delay, this.stopSignal.signal);
      delay = Math.min(max, delay * 2);
    }
    this.connected = false;
  }

  /** One connection: reads events until the stream ends, fails or goes silent. */
  private async connect(ac: AbortController, onSnapshot: () => void): Promise<void> {
    const idleMs = this.opts.idleTimeoutMs ?? 6000;
    let idle: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (idle !== undefined) clearTimeout(idle);
      idle = setTimeout(() => ac.abort(new Error(`silent for ${idleMs} ms`)), idleMs);
      idle.unref();
    };
    try {
      arm();
      const headers = await this.headers();
      headers.accept = "text/event-stream";
      const since = this.seq >= 0 ? `?since=${this.seq}` : "";
      const res = await this.fetchFn(`${this.url}/fleet/v1/stream${since}`, {
        headers,
        signal: ac.signal,
        redirect: "error",
      });
      if (res.status !== 200) {
        const text = await readCapped(res, 4096).catch(() => "");
        throw new Error(`GET /fleet/v1/stream answered ${res.status} ${text.slice(0, 300)}`);
      }
      const type = res.headers.get("content-type") ?? "";
      if (!type.startsWith("text/event-stream"))
        throw new Error(`GET /fleet/v1/stream answered ${type || "no content type"}`);
      if (res.body === null) throw new Error("GET /fleet/v1/stream answered no body");
      this.connected = true;
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          arm();
          for (const ev of parser.feed(decoder.decode(value, { stream: true }))) {
            if (this.handle(ev)) onSnapshot();
          }
        }
      } finally {
        reader.cancel().catch(() => undefined);
      }
    } catch (e) {
      const reason: unknown = ac.signal.aborted ? ac.signal.reason : undefined;
      throw reason instanceof Error ? reason : e;
    } finally {
      if (idle !== undefined) clearTimeout(idle);
      ac.abort();
    }
  }

  /** Applies one event; true for a snapshot. A malformed event throws (the stream reconnects). */
  private handle(ev: SseEvent): boolean {
    if (ev.event !== "snapshot" && ev.event !== "change" && ev.event !== "ping") return false;
    let data: Record<string, unknown>;
    try {
      data = obj(parseUntrustedJson(ev.data), `${ev.event} event`);
    } catch (e) {
      throw new WireError(`${ev.event} event: ${(e as Error).message}`);
    }
    const what = `${ev.event} event`;
    const seq = int(data, "seq", what);
    if (ev.event === "snapshot") {
      const raw = member(data, "switches");
      if (!Array.isArray(raw)) throw new WireError(`${what}: switches is not an array`);
      const next = new Map<string, SwitchRow>();
      for (const s of raw) {
        const row = switchFromWire(s);
        if (this.concerns(row)) next.set(row.id, row);
      }
      this.cache = next;
      this.cacheList = [...next.values()];
      this.seq = seq;
      this.synced = true;
      this.lastEventAt = this.now();
      this.lastEventMono = performance.now();
      this.hello();
      return true;
    }
    if (!this.synced) throw new WireError(`${what} before the snapshot`);
    if (ev.event === "change") {
      const op = str(data, "op", what, 16);
      if (op !== "create" && op !== "delete")
        throw new WireError(`${what}: op ${JSON.stringify(op)} is unknown`);
      const row = switchFromWire(member(data, "switch"));
      this.lastEventAt = this.now();
      this.lastEventMono = performance.now();
      if (seq <= this.seq) return false; // already applied (a replay)
      this.seq = seq;
      if (op === "create" && row.deletedAt === null && this.concerns(row))
        this.cache.set(row.id, row);
      else this.cache.delete(row.id);
      this.cacheList = [...this.cache.values()];
      return false;
    }
    // ping: alive
    this.lastEventAt = this.now();
    this.lastEventMono = performance.now();
    const b = this.bundleKey();
    if (b !== this.helloBundle) this.hello();
    return false;
  }

  /** A switch for this agent: no agent in its scope, or this one. */
  private concerns(s: SwitchRow): boolean {
    return s.scope.agent === undefined || s.scope.agent === this.opts.agentId;
  }

  private bundleKey(): string {
    const b = this.opts.bundle?.() ?? null;
    return b === null ? "" : `${b.name}@${b.revision ?? ""}`;
  }

  /** POST /fleet/v1/hello, best effort (a failure is logged at debug). */
  private hello(): void {
    const bundle = this.opts.bundle?.() ?? null;
    this.helloBundle = this.bundleKey();
    const p = this.call(
      "POST",
      "/fleet/v1/hello",
      { instance: this.instance, bundle, version: this.opts.version },
      (v) => v,
      "hello",
    ).catch((e: unknown) => {
      this.opts.log.debug("fleet: hello failed", {
        event: "fleet.hello_failed",
        error: (e as Error).message,
      });
    });
    void p;
  }
}

type FetchResponse = Awaited<ReturnType<typeof fetch>>;

const secs = (ms: number): number => Math.round(ms / 100) / 10;

/** The body of `res` as text, at most `max` bytes (more is an error). */
async function readCapped(res: FetchResponse, max: number): Promise<string> {
  const len = Number(res.headers.get("content-length"));
  if (Number.isFinite(len) && len > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`the answer is larger than ${max} bytes`);
  }
  if (res.body === null) return "";
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`the answer is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** fetch's "fetch failed" with its cause (ECONNREFUSED …) said. */
function causeMessage(e: Error): string {
  const cause = (e as { cause?: unknown }).cause;
  if (typeof cause !== "object" || cause === null) return e.message;
  const { code, message } = cause as { code?: unknown; message?: unknown };
  const c = typeof code === "string" ? code : typeof message === "string" ? message : undefined;
  return c === undefined ? e.message : `${e.message}: ${c}`;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
