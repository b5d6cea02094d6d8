/**
 * What the log writer does where the winston logger it replaced did not hold
 * up: logging never throws into the caller (a throwing getter or toJSON in the
 * fields gives a line without them), a `__proto__` field is an ordinary key in
 * every realm, a message with printf tokens keeps its fields, and a log stream
 * that fails (EPIPE, an error from the stream, a throwing write, an ended
 * stream) neither crashes the process nor hangs flush(). The stream failures
 * run for real in a child process (winston's logger died there of an
 * unhandled 'error' event), with the real src/shared/log.ts transpiled.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import ts from "typescript";
import { createLogger, type Logger } from "../../src/shared/log";

/** A logger writing into memory, and its text. */
function memory(level: "info" | "debug" = "info"): { log: Logger; text: () => string } {
  let text = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString("utf8");
      cb();
    },
  });
  return { log: createLogger(level, stream), text: () => text };
}

const SECRET = "sk-live-0123456789";

describe("logging never throws into the caller", () => {
  const throwingGetter = (): Record<string, unknown> => {
    const f: Record<string, unknown> = { event: "bad.getter" };
    Object.defineProperty(f, "token", {
      enumerable: true,
      get() {
        throw new Error(`getter failed: ${SECRET}`);
      },
    });
    return f;
  };
  const cases: Array<[string, () => unknown, string | undefined]> = [
    ["a throwing getter", throwingGetter, "bad.getter"],
    [
      "a throwing toJSON in a nested value",
      () => ({
        event: "bad.tojson",
        v: {
          toJSON() {
            throw new Error(SECRET);
          },
        },
      }),
      "bad.tojson",
    ],
    [
      "a Proxy whose keys throw",
      () =>
        new Proxy(
          {},
          {
            ownKeys() {
              throw new Error(SECRET);
            },
          },
        ),
      undefined,
    ],
    [
      "a throwing `message` getter",
      () => {
        const f: Record<string, unknown> = { event: "bad.message" };
        Object.defineProperty(f, "message", {
          enumerable: true,
          get() {
            throw new Error(SECRET);
          },
        });
        return f;
      },
      "bad.message",
    ],
  ];

  test.each(cases)("%s: one valid line, without the fields or the error", (_name, make, event) => {
    const { log, text } = memory();
    expect(() => log.error("boom", make() as Record<string, unknown>)).not.toThrow();
    const lines = text().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toBe("");
    const rec = JSON.parse(lines[0] ?? "") as Record<string, unknown>;
    expect(rec).toEqual({
      ...(event === undefined ? {} : { event }),
      level: "error",
      log_error: "the fields could not be serialised",
      msg: "boom",
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
    });
    expect(text()).not.toContain(SECRET);
  });

  test("null fields are no fields", () => {
    const { log, text } = memory();
    expect(() => log.info("n", null as unknown as Record<string, unknown>)).not.toThrow();
    expect(JSON.parse(text())).toEqual({
      level: "info",
      msg: "n",
      time: expect.any(String) as unknown,
    });
  });

  test("a throwing getter in a filtered-out debug call is not even read", () => {
    const { log, text } = memory("info");
    expect(() => log.debug("d", throwingGetter())).not.toThrow();
    expect(text()).toBe("");
  });
});

describe("fields", () => {
  test("a `__proto__` field is an ordinary key with the accessor present too (winston dropped it here)", () => {
    expect(Object.hasOwn(Object.prototype, "__proto__")).toBe(true); // jest's realm keeps the accessor
    const { log, text } = memory();
    const fields = JSON.parse('{"event":"p","__proto__":{"polluted":1},"a":1}') as Record<
      string,
      unknown
    >;
    log.info("p", fields);
    expect(text().replace(/"time":"[^"]+"/, '"time":"T"')).toBe(
      '{"__proto__":{"polluted":1},"a":1,"event":"p","level":"info","msg":"p","time":"T"}\n',
    );
    expect(Object.getPrototypeOf(fields)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  test("a message with printf tokens keeps its fields (winston dropped every field)", () => {
    const { log, text } = memory();
    log.warn("rate 100% of %s", { event: "x.rate", n: 1 });
    expect(JSON.parse(text())).toEqual({
      event: "x.rate",
      level: "warn",
      msg: "rate 100% of %s",
      n: 1,
      time: expect.any(String) as unknown,
    });
  });

  test("a line logged before a message is written before it", async () => {
    const { log, text } = memory();
    log.line('{"event":"first"}', "info");
    log.info("second", { event: "second" });
    await log.flush();
    const events = text()
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { event: string }).event);
    expect(events).toEqual(["first", "second"]);
  });
});

describe("the stream", () => {
  test("one set of listeners per stream, none for a silent logger", () => {
    const stream = new Writable({ write: (_c, _e, cb) => cb() });
    createLogger("silent", stream);
    expect(stream.listenerCount("error")).toBe(0);
    createLogger("info", stream);
    createLogger("debug", stream);
    expect(stream.listenerCount("error")).toBe(1);
    expect(stream.listenerCount("drain")).toBe(1);
  });

  test("flush() waits for a write still in progress, without 'drain'", async () => {
    let done = 0;
    const stream = new Writable({
      write(_chunk, _enc, cb) {
        setTimeout(() => {
          done += 1;
          cb();
        }, 30);
      },
    });
    const log = createLogger("info", stream);
    log.info("slow");
    expect(stream.writableNeedDrain).toBe(false);
    await log.flush();
    expect(done).toBe(1);
  });

  test("flush() waits for 'drain' after a write that filled the buffer", async () => {
    let done = 0;
    const stream = new Writable({
      highWaterMark: 8,
      write(_chunk, _enc, cb) {
        setTimeout(() => {
          done += 1;
          cb();
        }, 20);
      },
    });
    const log = createLogger("info", stream);
    log.info("a");
    log.info("b");
    expect(stream.writableNeedDrain).toBe(true);
    await log.flush();
    expect(done).toBe(2);
  });
});

/** The child: logs through the real writer to a failing stream, then says what happened in `out`. */
const CHILD = `
const fs = require("node:fs");
const { Writable } = require("node:stream");
const { createLogger } = require(process.argv[2]);
const mode = process.argv[3];
const out = process.argv[4];
const note = (s) => fs.appendFileSync(out, s + "\\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const streams = {
  stdout: () => process.stdout,
  "stream-error": () => new Writable({ write: (c, e, cb) => cb(new Error("disk gone")) }),
  "async-error": () => new Writable({ highWaterMark: 1, write: (c, e, cb) => setTimeout(() => cb(new Error("late failure")), 30) }),
  "throwing-write": () => { const s = new Writable({ write: (c, e, cb) => cb() }); s.write = () => { throw new Error("write threw"); }; return s; },
  ended: () => { const s = new Writable({ write: (c, e, cb) => cb() }); s.end(); return s; },
};
(async () => {
  const log = createLogger("info", streams[mode]());
  for (let i = 0; i < 40; i++) {
    log.info("tick", { event: "tick", i });
    log.line('{"event":"line"}', "info");
    log.raw('{"event":"raw"}\\n');
    if (i === 0) { note("logged"); await log.flush(); note("flushed"); }
    await sleep(10);
  }
  const hung = setTimeout(() => note("flush hung"), 2000);
  await log.flush();
  clearTimeout(hung);
  note("survived");
})().catch((e) => note("threw " + e.message));
`;

describe("a failing log stream does not crash the process", () => {
  let dir: string;
  let mod: string;
  let child: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "tg-log-"));
    const src = readFileSync(join(__dirname, "..", "..", "src", "shared", "log.ts"), "utf8");
    expect(src).not.toMatch(/from "\.{1,2}\//); // no local imports to transpile along
    mod = join(dir, "log.js");
    writeFileSync(
      mod,
      ts.transpileModule(src, {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
      }).outputText,
    );
    child = join(dir, "child.cjs");
    writeFileSync(child, CHILD);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs the child; `closeAfterFirst` closes its stdout (and stderr) pipe once a line arrived. */
  function runChild(
    mode: string,
    close: "none" | "stdout" | "both" = "none",
  ): Promise<{ code: number | null; notes: string[]; stderr: string; stdout: string }> {
    const out = join(dir, `${mode}-${close}.txt`);
    writeFileSync(out, "");
    const p = spawn(process.execPath, [child, mod, mode, out], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => {
      stdout += d.toString("utf8");
      if (close !== "none" && stdout.includes("\n")) {
        p.stdout.destroy();
        if (close === "both") p.stderr.destroy();
      }
    });
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    return new Promise((resolve) =>
      p.on("exit", (code) =>
        resolve({
          code,
          notes: readFileSync(out, "utf8").trim().split("\n"),
          stderr,
          stdout,
        }),
      ),
    );
  }

  const notice = (why: string): string =>
    `toolgate: the log stream failed (${why}); log lines are dropped\n`;

  test("stdout closed by the reader (EPIPE): the process lives on, one notice on stderr", async () => {
    const r = await runChild("stdout", "stdout");
    expect(r.notes).toEqual(["logged", "flushed", "survived"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('"event":"tick"');
    expect(r.stderr).toBe(notice("EPIPE"));
  });

  test("stdout and stderr both closed: the process lives on", async () => {
    const r = await runChild("stdout", "both");
    expect(r.notes).toEqual(["logged", "flushed", "survived"]);
    expect(r.code).toBe(0);
  });

  test.each([
    ["stream-error", "disk gone"],
    ["async-error", "late failure"],
    ["throwing-write", "write threw"],
    ["ended", "closed"],
  ])("a stream that fails (%s): no crash, no throw, flush() resolves", async (mode, why) => {
    const r = await runChild(mode);
    expect(r.notes).toEqual(["logged", "flushed", "survived"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(notice(why));
  });
});
