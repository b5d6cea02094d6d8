/**
 * Issue #13, item 11b: the trail writer must not leave an empty
 * trail-*.jsonl behind for every failed write. Writes fail for real: the
 * writer runs in a child process whose file-size limit (RLIMIT_FSIZE) is 0,
 * so every write(2) to a regular file fails with EFBIG (node ignores
 * SIGXFSZ), as on a full disk; in the second test the limit is lowered and
 * raised again while the writer runs (prlimit), as a disk that fills and is
 * freed. The child runs the real trail code (transpiled from src/).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { verifyTrail } from "../../src/trail";
import { tempDir } from "../helpers/opa";
import { transpileSrc } from "../helpers/transpile";

jest.setTimeout(60_000);

/** The child: opens a trail, then follows commands from stdin; prints one JSON line per command. */
const CHILD = `
const { readdirSync, statSync } = require("node:fs");
const { join } = require("node:path");
const { createInterface } = require("node:readline");
const { AuditTrail } = require(process.argv[2]);
const dir = process.argv[3];
const trail = AuditTrail.open({ dir, flushIntervalMs: 5, fsyncIntervalMs: 1000, onError: () => {} });
let n = 0;
const files = () => readdirSync(dir).sort().map((f) => ({ name: f, size: statSync(join(dir, f)).size }));
const say = (o) => process.stdout.write(JSON.stringify({ ...o, files: files(), writeErrors: trail.stats().writeErrors }) + "\\n");
const commands = {
  async append(k) { for (let i = 0; i < k; i++) trail.append("test", { n: ++n }); },
  async flush() { await trail.flush(); },
  async wait(ms) { await new Promise((r) => setTimeout(r, ms)); },
  async close() { await trail.close(); },
};
createInterface({ input: process.stdin }).on("line", async (line) => {
  const [cmd, arg] = line.split(" ");
  try { await commands[cmd](Number(arg)); say({ cmd, ok: true }); }
  catch (e) { say({ cmd, ok: false, code: e.code }); }
});
say({ cmd: "open", ok: true });
`;

interface Reply {
  cmd: string;
  ok: boolean;
  code?: string;
  files: Array<{ name: string; size: number }>;
  writeErrors: number;
}

class Child {
  private readonly replies: Reply[] = [];
  private readonly waiting: Array<{ res: (r: Reply) => void; rej: (e: Error) => void }> = [];
  private stderr = "";
  private exited = false;
  constructor(readonly proc: ChildProcessWithoutNullStreams) {
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const r = JSON.parse(line) as Reply;
      const w = this.waiting.shift();
      if (w) w.res(r);
      else this.replies.push(r);
    });
    proc.stderr.on("data", (d: Buffer) => (this.stderr += d.toString()));
    proc.on("exit", () => {
      this.exited = true;
      for (const w of this.waiting.splice(0)) w.rej(new Error(`child exited: ${this.stderr}`));
    });
  }
  next(): Promise<Reply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.exited) return Promise.reject(new Error(`child exited: ${this.stderr}`));
    return new Promise((res, rej) => this.waiting.push({ res, rej }));
  }
  send(cmd: string): Promise<Reply> {
    this.proc.stdin.write(`${cmd}\n`);
    return this.next();
  }
}

function start(dir: string, fsizeZero: boolean): Child {
  const trailJs = transpileSrc("src/trail/writer.ts", tempDir("toolgate-trail-js-"));
  const script = join(tempDir("toolgate-trail-child-"), "child.js");
  writeFileSync(script, CHILD);
  // stdout is a pipe, so the limit never touches the replies
  const proc = fsizeZero
    ? spawn("bash", ["-c", 'ulimit -f 0 && exec "$0" "$@"', process.execPath, script, trailJs, dir])
    : spawn(process.execPath, [script, trailJs, dir]);
  return new Child(proc);
}

const empties = (r: Reply) => r.files.filter((f) => f.size === 0);

test("every write fails (file-size limit 0, as a full disk): retries leave no empty trail files", async () => {
  const dir = tempDir("toolgate-trail-full-");
  const child = start(dir, true);
  expect((await child.next()).ok).toBe(true);
  await child.send("append 10");
  const failing = await child.send("wait 1500"); // retries every 5 ms, doubling to 1 s
  expect(failing.writeErrors).toBeGreaterThanOrEqual(3);
  expect(empties(failing)).toEqual([]);
  const closed = await child.send("close");
  expect(closed).toMatchObject({ ok: false, code: "audit_write_failed" });
  expect(empties(closed)).toEqual([]);
  child.proc.stdin.end();
  expect(readdirSync(dir).filter((f) => statSync(join(dir, f)).size === 0)).toEqual([]);
});

const prlimit = spawnSync("prlimit", ["--version"]).status === 0;

(prlimit ? test : test.skip)(
  "the disk fills while the writer runs and is freed again: no empty files, and the chain verifies",
  async () => {
    const dir = tempDir("toolgate-trail-fills-");
    const child = start(dir, false);
    const limit = (v: string): void => {
      const r = spawnSync("prlimit", ["--pid", String(child.proc.pid), `--fsize=${v}:`]);
      expect(r.status).toBe(0);
    };
    expect((await child.next()).ok).toBe(true);
    await child.send("append 5");
    expect((await child.send("flush")).ok).toBe(true);
    limit("0"); // full
    await child.send("append 5");
    const failing = await child.send("wait 1500");
    expect(failing.writeErrors).toBeGreaterThanOrEqual(3);
    expect(empties(failing)).toEqual([]);
    limit("unlimited"); // freed
    expect((await child.send("flush")).ok).toBe(true);
    const closed = await child.send("close");
    expect(closed.ok).toBe(true);
    expect(empties(closed)).toEqual([]);
    child.proc.stdin.end();
    const report = verifyTrail([dir]);
    expect(report).toMatchObject({ ok: true, records: 10 });
  },
);
