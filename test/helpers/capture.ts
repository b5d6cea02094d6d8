import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../src/shared/log";

/** A real logger (src/shared/log.ts) writing into memory: each entry one parsed JSON line. */
export function captureLogger(level: "debug" | "info" = "info"): {
  log: Logger;
  lines: () => Array<Record<string, unknown>>;
  raw: () => string;
} {
  let text = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString("utf8");
      cb();
    },
  });
  return {
    log: createLogger(level, stream),
    raw: () => text,
    lines: () =>
      text
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
