import { writeSync } from "node:fs";
import type { Writable } from "node:stream";

/**
 * Structured logging: one JSON object per line, on stdout, the one log
 * destination (`toolgate serve` and `toolgate control` never log to stderr,
 * which carries only the CLI's own messages: usage, failures). Operational
 * events and audit records share the stream; every line has `time`, `level`,
 * `msg` (its only message key) and an `event` name.
 *
 * The line is written here directly, in the format the project's winston
 * logger (format.json) wrote before, byte for byte (test/unit/log-golden.test.ts):
 * keys sorted at every depth, a circular reference as "[Circular]", a BigInt
 * as a string, what JSON.stringify would skip skipped. Winston and its ~80
 * modules per thread (main and audit worker) are no longer loaded.
 *
 * Logging never throws into the caller: fields that cannot be serialised
 * (a throwing getter or toJSON) give a line without them, and a stream that
 * fails (EPIPE, closed, throwing) is reported once on fd 2 and then skipped,
 * instead of crashing the process with an unhandled 'error' event.
 */
export type LogLevel = "error" | "warn" | "info" | "debug" | "silent";

export interface Logger {
  /** The least severity this logger writes. */
  readonly level: LogLevel;
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  /**
   * Writes one pre-serialised JSON object line at `level` (if enabled),
   * bypassing the field serialiser: for high-volume audit records.
   */
  line(json: string, level: Exclude<LogLevel, "silent">): void;
  /**
   * Writes text that is already whole log lines (newline-terminated JSON,
   * filtered by level): the audit worker's lines, written by this thread so
   * that one writer owns the stream.
   */
  raw(text: string): void;
  /** Resolves when everything logged so far has been handed to the stream. */
  flush(): Promise<void>;
}

/**
 * The fields without a `message` key: the line has one message, `msg` (winston
 * appended a meta `message` to it: "x" + " x"). A security event's record
 * carries its message, the same as `msg`: dropped. A different one is kept as
 * `detail` (unless the fields have a `detail`).
 */
function withoutMessage(msg: string, fields: Record<string, unknown>): Record<string, unknown> {
  if (!Object.hasOwn(fields, "message")) return fields;
  const { message, ...rest } = fields;
  if (message !== undefined && message !== msg && rest.detail === undefined) rest.detail = message;
  return rest;
}

// -- serialisation (what winston's format.json did: safe-stable-stringify with
// its defaults and logform's BigInt replacer) ------------------------------------

const CIRCULAR = '"[Circular]"';

// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /[\u0000-\u001f"\\\ud800-\udfff]/;

/** A string as JSON: quoted as it is when nothing in it needs escaping (JSON.stringify otherwise). */
function quote(s: string): string {
  return s.length < 5000 && !NEEDS_ESCAPE.test(s) ? `"${s}"` : JSON.stringify(s);
}

/**
 * A typed array with elements: its keys stay in index order (safe-stable-stringify
 * sorts every other object's keys). ArrayBuffer.isView is true for DataViews
 * too, which have no `length`.
 */
function isTypedArrayWithEntries(value: object): boolean {
  if (!ArrayBuffer.isView(value)) return false;
  const length = (value as { length?: unknown }).length;
  return typeof length === "number" && length !== 0;
}

/**
 * One value as JSON, or undefined for what JSON skips (undefined, functions,
 * symbols). `stack` holds the objects being serialised above this one: a
 * value already on it is "[Circular]" (a value seen twice side by side is
 * written twice).
 */
function serialise(value: unknown, key: string, stack: object[]): string | undefined {
  if (typeof value === "object" && value !== null) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === "function") value = (toJSON as (k: string) => unknown).call(value, key);
  }
  switch (typeof value) {
    case "string":
      return quote(value);
    case "number":
      return Number.isFinite(value) ? String(value) : "null";
    case "boolean":
      return value ? "true" : "false";
    case "bigint":
      return `"${value.toString()}"`;
    case "object": {
      if (value === null) return "null";
      if (stack.includes(value)) return CIRCULAR;
      if (Array.isArray(value)) {
        if (value.length === 0) return "[]";
        stack.push(value);
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ",";
          out += serialise(value[i], String(i), stack) ?? "null";
        }
        stack.pop();
        return `${out}]`;
      }
      const keys = Object.keys(value);
      if (keys.length === 0) return "{}";
      if (!isTypedArrayWithEntries(value)) keys.sort();
      stack.push(value);
      let out = "";
      for (const k of keys) {
        const v = serialise((value as Record<string, unknown>)[k], k, stack);
        if (v === undefined) continue;
        out += `${out === "" ? "" : ","}${quote(k)}:${v}`;
      }
      stack.pop();
      return `{${out}}`;
    }
    default:
      return undefined;
  }
}

/**
 * The line for one call: the fields (less `message`, see withoutMessage) and
 * `level`, `msg`, `time`, which win over fields of the same names, all at one
 * level with sorted keys. Nothing is assigned by a field's name, so a field
 * named `__proto__` is an ordinary key and never reaches a prototype.
 */
function render(level: string, msg: string, fields: Record<string, unknown> | undefined): string {
  let meta: Record<string, unknown> | undefined;
  let keys: string[];
  let message: unknown = msg;
  let stackOf: unknown;
  let causeOf: unknown;
  if (typeof fields === "object" && fields !== null) {
    meta = withoutMessage(msg, fields);
    keys = Object.keys(meta).filter((k) => k !== "level" && k !== "msg" && k !== "time");
    // as winston's logger.log: an inherited message/stack/cause (an Error passed as fields)
    const m = meta as { message?: unknown; stack?: unknown; cause?: unknown };
    if (m.message) message = `${msg} ${m.message as string}`;
    if (m.stack) {
      stackOf = m.stack;
      if (!keys.includes("stack")) keys.push("stack");
    }
    if (m.cause) {
      causeOf = m.cause;
      if (!keys.includes("cause")) keys.push("cause");
    }
    keys.push("level", "msg", "time");
    keys.sort();
  } else {
    keys = ["level", "msg", "time"];
  }
  const time = new Date().toISOString();
  const stack: object[] = [];
  let out = "";
  for (const k of keys) {
    const value =
      k === "level"
        ? level
        : k === "msg"
          ? message
          : k === "time"
            ? time
            : k === "stack" && stackOf !== undefined
              ? stackOf
              : k === "cause" && causeOf !== undefined
                ? causeOf
                : meta?.[k];
    const v = serialise(value, k, stack);
    if (v === undefined) continue;
    out += `${out === "" ? "" : ","}${quote(k)}:${v}`;
  }
  return `{${out}}\n`;
}

/** The line when the fields cannot be serialised: level, msg, time, and the event if it is a string. */
function fallback(level: string, msg: string, fields: unknown): string {
  let event: unknown;
  try {
    event = (fields as { event?: unknown }).event;
  } catch {
    event = undefined;
  }
  const ev = typeof event === "string" ? `"event":${JSON.stringify(event)},` : "";
  const m = typeof msg === "string" ? msg : "(not a string)";
  return `{${ev}"level":${JSON.stringify(level)},"log_error":"the fields could not be serialised","msg":${JSON.stringify(m)},"time":"${new Date().toISOString()}"}\n`;
}

// -- the stream ------------------------------------------------------------------

/** Per stream (loggers share process.stdout): whether it failed, and flush()es waiting for it. */
interface Sink {
  failed: boolean;
  reported: boolean;
  waiters: Array<() => void>;
  timer: NodeJS.Timeout | undefined;
}
const sinks = new WeakMap<Writable, Sink>();

function gone(stream: Writable, sink: Sink): boolean {
  return sink.failed || stream.destroyed || stream.writableEnded || Boolean(stream.errored);
}

/** Once per stream: the first line dropped says so on fd 2 (unless the log is fd 2). */
function report(stream: Writable, sink: Sink, why: unknown): void {
  if (sink.reported) return;
  sink.reported = true;
  if ((stream as { fd?: unknown }).fd === 2) return;
  try {
    const e = why as { code?: unknown; message?: unknown } | undefined;
    const reason =
      typeof e?.code === "string" ? e.code : typeof e?.message === "string" ? e.message : "closed";
    writeSync(
      2,
      `toolgate: the log stream failed (${reason.slice(0, 200)}); log lines are dropped\n`,
    );
  } catch {
    // fd 2 is gone too: nowhere left to say it
  }
}

/** Resolves the flush()es waiting once the stream has nothing buffered (or is gone). */
function settle(stream: Writable, sink: Sink): void {
  if (sink.waiters.length === 0) return;
  if (!gone(stream, sink) && stream.writableLength > 0) {
    // 'drain' comes only after a write that returned false: poll otherwise
    // (the timer keeps the process alive until the lines are out, as the
    // write in progress would)
    if (sink.timer === undefined && !stream.writableNeedDrain) {
      sink.timer = setTimeout(() => {
        sink.timer = undefined;
        settle(stream, sink);
      }, 5);
    }
    return;
  }
  clearTimeout(sink.timer);
  sink.timer = undefined;
  const waiters = sink.waiters;
  sink.waiters = [];
  for (const w of waiters) w();
}

function sinkFor(stream: Writable): Sink {
  const known = sinks.get(stream);
  if (known !== undefined) return known;
  const s: Sink = { failed: false, reported: false, waiters: [], timer: undefined };
  sinks.set(stream, s);
  // A stream's 'error' without a listener is an uncaught exception: the log
  // stream failing must not take the process down (winston let it).
  stream.on("error", (e: unknown) => {
    s.failed = true;
    report(stream, s, e);
    settle(stream, s);
  });
  stream.on("drain", () => settle(stream, s));
  stream.on("close", () => settle(stream, s));
  return s;
}

const RANK: Record<Exclude<LogLevel, "silent">, number> = { error: 1, warn: 2, info: 3, debug: 4 };

export function createLogger(level: LogLevel, stream: Writable = process.stdout): Logger {
  const max = level === "silent" ? 0 : RANK[level];
  // a silent logger never writes: no listeners on its stream
  const sink: Sink =
    max === 0 ? { failed: true, reported: true, waiters: [], timer: undefined } : sinkFor(stream);
  const write = (text: string): void => {
    if (gone(stream, sink)) return report(stream, sink, stream.errored);
    try {
      stream.write(text);
    } catch (e) {
      sink.failed = true;
      report(stream, sink, e);
    }
  };
  let pending: string[] = [];
  const writePending = (): void => {
    if (pending.length === 0) return;
    const text = pending.join("\n") + "\n";
    pending = [];
    write(text);
  };
  const emit =
    (lvl: Exclude<LogLevel, "silent">) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      if (RANK[lvl] > max) return;
      let text: string;
      try {
        text = render(lvl, msg, fields);
      } catch {
        text = fallback(lvl, msg, fields);
      }
      writePending(); // keep the order of lines
      write(text);
    };
  return {
    level,
    line: (json, lvl) => {
      if (RANK[lvl] > max) return;
      // Batched: one write per event-loop turn instead of one per decision.
      pending.push(json);
      if (pending.length === 1) setImmediate(writePending);
    },
    raw: (text) => {
      if (max === 0 || text === "") return;
      writePending(); // keep the order of lines
      write(text);
    },
    error: emit("error"),
    warn: emit("warn"),
    info: emit("info"),
    debug: emit("debug"),
    flush: () =>
      new Promise<void>((resolve) => {
        writePending();
        if (max === 0) return resolve();
        sink.waiters.push(resolve);
        settle(stream, sink);
      }),
  };
}

export const silentLogger: Logger = createLogger("silent");
