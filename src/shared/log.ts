import type { Writable } from "node:stream";
import winston from "winston";
import { hasOwn } from "./guards";

/**
 * Structured logging: one JSON object per line (winston), on stdout, the one
 * log destination (`toolgate serve` and `toolgate control` never log to
 * stderr, which carries only the CLI's own messages: usage, failures).
 * Operational events and audit records share the stream; every line has
 * `time`, `level`, `msg` (its only message key) and an `event` name.
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
   * bypassing the format pipeline: for high-volume audit records.
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
 * The fields without a `message` key: winston appends a meta `message` to the
 * line's message ("x" + " x"), and the line has one message, `msg`. A
 * security event's record carries its message, the same as `msg`: dropped. A
 * different one is kept as `detail` (unless the fields have a `detail`).
 */
function withoutMessage(msg: string, fields: Record<string, unknown>): Record<string, unknown> {
  if (!hasOwn(fields, "message")) return fields;
  const { message, ...rest } = fields;
  if (message !== undefined && message !== msg && rest.detail === undefined) rest.detail = message;
  return rest;
}

const RANK: Record<Exclude<LogLevel, "silent">, number> = { error: 1, warn: 2, info: 3, debug: 4 };

export function createLogger(level: LogLevel, stream: Writable = process.stdout): Logger {
  const transport = new winston.transports.Stream({ stream });
  const w = winston.createLogger({
    level: level === "silent" ? "error" : level,
    silent: level === "silent",
    format: winston.format.combine(
      winston.format((info) => {
        // publish `msg` (winston calls it `message`) and an ISO `time`
        const rec = info as Record<string, unknown>;
        rec.time = new Date().toISOString();
        rec.msg = rec.message;
        delete rec.message;
        return info;
      })(),
      winston.format.json(),
    ),
    transports: [transport],
  });
  const emit =
    (lvl: Exclude<LogLevel, "silent">) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      w.log(lvl, msg, fields === undefined ? undefined : withoutMessage(msg, fields));
    };
  const max = level === "silent" ? 0 : RANK[level];
  let pending: string[] = [];
  const writePending = (): void => {
    if (pending.length === 0) return;
    const text = pending.join("\n") + "\n";
    pending = [];
    stream.write(text);
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
      stream.write(text);
    },
    error: emit("error"),
    warn: emit("warn"),
    info: emit("info"),
    debug: emit("debug"),
    flush: () =>
      new Promise<void>((resolve) => {
        writePending();
        if (stream.writableLength === 0) return resolve();
        stream.once("drain", () => resolve());
      }),
  };
}

export const silentLogger: Logger = createLogger("silent");
