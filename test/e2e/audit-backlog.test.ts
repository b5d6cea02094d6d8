/**
 * Audit records that cannot be written are bounded in memory, and no action
 * goes unrecorded (audit.max_backlog_bytes): the built CLI in a child
 * process, real HTTP on loopback, a disk that fills for real. The child's
 * file-size limit (RLIMIT_FSIZE) is lowered to 0 while it runs (prlimit), so
 * every write(2) of the audit trail fails with EFBIG as on a full disk
 * (node ignores SIGXFSZ), then raised again, as a disk that is freed.
 *
 * While the trail cannot be written its records wait in memory; once they
 * pass the limit, decisions are denied `audit_unavailable` (fail closed) and
 * counted instead of queued. Freed, the records are written, every allowed
 * decision is in the trail, the count of the refused ones is logged, and
 * decisions are allowed again. Both with the audit worker thread and without.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { listTrailFiles, readTrail, verifyTrail } from "../../src/trail";
import { tempDir } from "../helpers/opa";
import { postJson, refRequest } from "../helpers/toolgate";

const root = join(__dirname, "..", "..");
const bin = join(root, "bin", "toolgate.js");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const LIMIT = 1024 * 1024;

interface Line {
  event?: string;
  decisions?: number;
  backlog_bytes?: number;
  limit_bytes?: number;
}

interface Answer {
  status: number;
  outcome?: string;
  code?: string;
  id?: string;
}

/** One decision over real HTTP: its status, outcome, first reason code and id. */
async function post(base: string, body: unknown): Promise<Answer> {
  const r = await postJson(base, "/v1/decisions", body);
  const j = r.json as { outcome?: string; decision_id?: string; reasons?: Array<{ code: string }> };
  return {
    status: r.status,
    ...(j.outcome !== undefined ? { outcome: j.outcome } : {}),
    ...(j.reasons?.[0] !== undefined ? { code: j.reasons[0].code } : {}),
    ...(j.decision_id !== undefined ? { id: j.decision_id } : {}),
  };
}

function fsize(pid: number, limit: string): void {
  const r = spawnSync("prlimit", ["--pid", String(pid), `--fsize=${limit}:`]);
  if (r.status !== 0) throw new Error(`prlimit: ${r.stderr.toString()}`);
}

const prlimit = spawnSync("prlimit", ["--version"]).status === 0;

describe.each([
  ["with the audit worker thread", "true"],
  ["with audit on the main thread", "false"],
])("a full disk under load, %s", (_name, worker) => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill("SIGKILL");
  });

  (prlimit ? test : test.skip)(
    "bounded backlog, audit_unavailable past it, every allow written once the disk is freed",
    async () => {
      const state = tempDir();
      const proc = spawn(process.execPath, [bin, "serve"], {
        cwd: root,
        env: {
          ...process.env,
          TOOLGATE_AGENT_PORT: "0",
          TOOLGATE_CONTROL_PORT: "0",
          TOOLGATE_STATE_DIR: state,
          TOOLGATE_LOG_LEVEL: "info",
          TOOLGATE_AUDIT_LOG_DECISIONS: "false",
          TOOLGATE_AUDIT_WORKER: worker,
          TOOLGATE_AUDIT_MAX_BACKLOG_BYTES: String(LIMIT),
          OTEL_SDK_DISABLED: "true",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child = proc;
      let stdout = "";
      proc.stderr?.resume();
      const ports = await new Promise<{ agent: number; control: string }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listening line: ${stdout}`)), 15_000);
        proc.stdout?.on("data", (c: Buffer) => {
          stdout += c.toString();
          const m = /"agent_port":"http:\/\/127\.0\.0\.1:(\d+)","control_port":"([^"]+)"/.exec(
            stdout,
          );
          if (m?.[1] && m[2]) {
            clearTimeout(timer);
            resolve({ agent: Number(m[1]), control: m[2] });
          }
        });
        proc.on("exit", (code) => reject(new Error(`exited ${code}: ${stdout}`)));
      });
      const base = `http://127.0.0.1:${ports.agent}`;
      const lines = (): Line[] =>
        stdout
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as Line);
      const gauge = async (): Promise<number> => {
        const text = await (await fetch(`${ports.control}/metrics`)).text();
        const m = /^toolgate_audit_backlog_bytes (\d+)$/m.exec(text);
        if (!m?.[1]) throw new Error("no toolgate_audit_backlog_bytes in /metrics");
        return Number(m[1]);
      };
      // ~8 KB of arguments per decision (redacted in the record: the trail holds their hashes)
      const body = refRequest({
        tool: "tickets.read",
        args: { ticket_id: "T-1", note: "n".repeat(8000) },
      });
      const before = await post(base, body);
      expect(before).toMatchObject({ status: 200, outcome: "allow" });
      await sleep(500); // written (the trail flushes every 50 ms)
      expect(await gauge()).toBe(0);

      // the disk is full: decide at 8 connections until 200 decisions were refused
      fsize(proc.pid ?? 0, "0");
      const answers: Answer[] = [];
      let refusals = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (refusals < 200 && answers.length < 50_000) {
            const a = await post(base, body);
            answers.push(a);
            if (a.code === "audit_unavailable") refusals++;
          }
        }),
      );
      const held = await gauge();
      const allowed = answers.filter((a) => a.outcome === "allow");
      const refused = answers.filter((a) => a.code === "audit_unavailable");
      expect(answers.every((a) => a.status === 200)).toBe(true);
      // every answer is one or the other, and a refusal is a deny
      expect(allowed.length + refused.length).toBe(answers.length);
      expect(refused.every((a) => a.outcome === "deny")).toBe(true);
      expect(refused.length).toBeGreaterThanOrEqual(200);
      expect(allowed.length).toBeGreaterThan(50);
      // what waits in memory stays at the limit: past it nothing more is kept (it may pass it
      // by the records of one hand-off to the worker, a few ms of decisions)
      expect(held).toBeGreaterThan(LIMIT * 0.75);
      expect(held).toBeLessThan(LIMIT * 1.25);
      const full = lines().filter((l) => l.event === "audit.backlog_full");
      expect(full).toHaveLength(1);
      expect(full[0]?.limit_bytes).toBe(LIMIT);
      expect(full[0]?.backlog_bytes).toBeGreaterThan(LIMIT);
      expect(full[0]?.backlog_bytes).toBeLessThan(LIMIT * 1.25);

      // the disk is freed: the records are written, and decisions are allowed again
      fsize(proc.pid ?? 0, "unlimited");
      let after: Answer | undefined;
      let polled = 0;
      for (let i = 0; i < 150; i++) {
        await sleep(100);
        after = await post(base, body);
        if (after.outcome === "allow") break;
        expect(after.code).toBe("audit_unavailable");
        polled++;
      }
      expect(after).toMatchObject({ status: 200, outcome: "allow" });
      // one line ends the episode, with the count of the decisions refused in it: each one
      const recovered = lines().filter((l) => l.event === "audit.backlog_recovered");
      expect(recovered).toHaveLength(1);
      expect(recovered[0]?.decisions).toBe(refused.length + polled);

      const exited = new Promise<number | null>((resolve) => proc.on("exit", resolve));
      proc.kill("SIGTERM");
      expect(await exited).toBe(0);
      child = undefined;

      // the trail verifies; every allowed decision is in it, no refused one is
      const files = listTrailFiles(join(state, "audit"));
      expect(verifyTrail(files).ok).toBe(true);
      const ids = new Set<unknown>();
      for (const line of readTrail(files)) {
        const e = line.entry();
        if (e?.kind === "decision") ids.add(e.record.decision_id);
      }
      for (const a of [before, ...allowed, after]) expect(ids.has(a?.id)).toBe(true);
      for (const a of refused) expect(ids.has(a.id)).toBe(false);
    },
    120_000,
  );
});
