/**
 * The log: one message key per line (`msg`; the winston logger this writer
 * replaced appended a `message` field to it, doubling a security event's
 * message) and one destination, stdout, as docs/audit.md, docs/operators.md
 * and log.level's doc say — checked on the raw bytes, since JSON.parse hides
 * a duplicated key.
 */
import { createLogger } from "../../src/shared/log";
import { captureLogger } from "../helpers/capture";
import { postJson, startTestToolgate } from "../helpers/toolgate";

/** How often `"key":` occurs as a key of the line's top-level object (values here are flat). */
function keyCount(line: string, key: string): number {
  return line.split(`"${key}":`).length - 1;
}

/** Captures what is written to stdout and to stderr (jest's own reporter writes elsewhere). */
function captureStdio(): { stdout: () => string; stderr: () => string; restore: () => void } {
  let out = "";
  let err = "";
  const text = (chunk: unknown): string =>
    typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8");
  const o = jest.spyOn(process.stdout, "write").mockImplementation((chunk: unknown) => {
    out += text(chunk);
    return true;
  });
  const e = jest.spyOn(process.stderr, "write").mockImplementation((chunk: unknown) => {
    err += text(chunk);
    return true;
  });
  return {
    stdout: () => out,
    stderr: () => err,
    restore: () => {
      o.mockRestore();
      e.mockRestore();
    },
  };
}

describe("log lines: one message", () => {
  test("a `message` field equal to the message is not appended to it: one `msg`, no `message`", () => {
    const logs = captureLogger("info");
    logs.log.warn("an action without permission", {
      event: "security.action_without_permission",
      message: "an action without permission",
      decision_id: "d-1",
    });
    const [line] = logs.raw().trim().split("\n");
    expect(keyCount(line ?? "", "msg")).toBe(1);
    expect(keyCount(line ?? "", "message")).toBe(0);
    expect(JSON.parse(line ?? "")).toMatchObject({
      level: "warn",
      msg: "an action without permission",
      event: "security.action_without_permission",
      decision_id: "d-1",
    });
  });

  test("a different `message` field is kept as `detail`, the message itself unchanged", () => {
    const logs = captureLogger("info");
    logs.log.error("export failed", { event: "x", message: "connection refused" });
    logs.log.info("plain", { event: "y" });
    logs.log.info("no fields");
    const lines = logs.raw().trim().split("\n");
    for (const l of lines) {
      expect(keyCount(l, "msg")).toBe(1);
      expect(keyCount(l, "message")).toBe(0);
    }
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toMatchObject([
      { msg: "export failed", detail: "connection refused" },
      { msg: "plain", event: "y" },
      { msg: "no fields" },
    ]);
  });
});

describe("log destination: stdout", () => {
  test("createLogger writes to stdout by default, nothing to stderr", async () => {
    const io = captureStdio();
    try {
      const log = createLogger("info");
      log.warn("w", { event: "test.w" });
      log.line(JSON.stringify({ event: "test.line" }), "info");
      log.raw(JSON.stringify({ event: "test.raw" }) + "\n");
      await log.flush();
    } finally {
      io.restore();
    }
    const events = io
      .stdout()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => (JSON.parse(l) as { event?: string }).event);
    expect(events.sort()).toEqual(["test.line", "test.raw", "test.w"]);
    expect(io.stderr()).not.toContain("test.");
  });

  test.each([
    ["a worker thread", "true"],
    ["the main thread", "false"],
  ])(
    "a real security event (audit on %s): one line on stdout with exactly one `msg` and no `message`",
    async (_name, worker) => {
      const io = captureStdio();
      let lines: string[] = [];
      try {
        const log = createLogger("info");
        const tg = await startTestToolgate(
          { TOOLGATE_AUDIT_WORKER: worker, TOOLGATE_CONTROL_ENABLED: "false" },
          { log },
        );
        try {
          // a report for a decision that does not exist: security.action_without_permission
          const bogus = await postJson(tg.agentServer.url, "/v1/actions", {
            decision_id: "no-such-decision",
            status: "ok",
          });
          expect(bogus.status).toBe(409);
          await tg.auditor?.flush();
          await log.flush();
        } finally {
          await tg.stop();
        }
        lines = io
          .stdout()
          .split("\n")
          .filter((l) => l.includes('"security.action_without_permission"'));
        expect(io.stderr()).not.toContain("security.");
      } finally {
        io.restore();
      }
      expect(lines).toHaveLength(1);
      const line = lines[0] as string;
      expect(keyCount(line, "msg")).toBe(1);
      expect(keyCount(line, "message")).toBe(0);
      const rec = JSON.parse(line) as { msg: string; level: string; event: string };
      expect(rec.level).toBe("warn");
      expect(rec.msg.length).toBeGreaterThan(0);
      expect(rec.msg).not.toMatch(/^(.+) \1$/); // not the message twice over ("x x")
    },
    30_000,
  );
});
