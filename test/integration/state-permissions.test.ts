/**
 * Issue #13, item 12: toolgate's state is owner-only. After a real start
 * (startTestToolgate: approvals and containment databases, the audit trail,
 * an http bundle persisted as last-known-good) and real decisions, every
 * directory under the state directory is 0700 and every file 0600 — whatever
 * the umask, and also when an older version left the directory 0755 and its
 * files 0644.
 */
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { BundleServer, fixtureBundle } from "../helpers/bundles";
import { freePort } from "../helpers/net";
import { tempDir } from "../helpers/opa";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

/** Every path under `dir` (itself included) with its permission bits. */
function modes(dir: string): Array<{ path: string; dir: boolean; mode: string }> {
  const out: Array<{ path: string; dir: boolean; mode: string }> = [];
  const walk = (p: string): void => {
    const st = statSync(p);
    out.push({ path: p, dir: st.isDirectory(), mode: (st.mode & 0o777).toString(8) });
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  walk(dir);
  return out;
}

/** One start, three decisions, a stop; the bundle comes over http from `port` (one source, one persisted copy). */
async function runOnce(stateDir: string, worker = true, port = 0): Promise<void> {
  const server = new BundleServer();
  server.publishFile(fixtureBundle("perm-1"));
  await server.start(port);
  let tg: Toolgate | undefined;
  try {
    tg = await startTestToolgate({
      TOOLGATE_STATE_DIR: stateDir,
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_POLICY_SOURCE: "http",
      TOOLGATE_POLICY_HTTP_URL: server.url,
      TOOLGATE_AUDIT_WORKER: String(worker), // the worker runs the built trail code (dist/)
    });
    expect(tg.bundles.status()).toMatchObject({ state: "OK", revision: "perm-1" });
    for (let i = 0; i < 3; i++) {
      const d = await postJson(tg.agentServer.url, "/v1/decisions", refRequest({ tool: "t" }));
      expect(d.status).toBe(200);
    }
  } finally {
    await tg?.stop(); // flushes the trail
    await server.stop();
  }
}

function expectOwnerOnly(stateDir: string): void {
  const all = modes(stateDir);
  const names = all.map((m) => m.path.slice(stateDir.length));
  // what a start and a decision leave behind: the trail, both databases, the persisted bundle
  expect(names).toEqual(
    expect.arrayContaining([
      "",
      "/audit",
      "/approvals.db",
      "/containment.db",
      "/bundles",
      expect.stringMatching(/^\/audit\/trail-\d{6}\.jsonl$/),
      expect.stringMatching(/^\/bundles\/[0-9a-f]{16}\/bundle\.tar\.gz$/),
    ]),
  );
  const wrong = all.filter((m) => m.mode !== (m.dir ? "700" : "600"));
  expect(wrong).toEqual([]);
}

let umask: number;
beforeEach(() => {
  umask = process.umask();
});
afterEach(() => {
  process.umask(umask);
});

test.each([
  ["umask 022, audit on its worker thread", 0o022, true],
  ["umask 022, audit in-process", 0o022, false],
  ["umask 000 (the modes do not depend on it)", 0o000, true],
])("a fresh state directory, %s: directories 0700, files 0600", async (_w, mask, worker) => {
  process.umask(mask);
  const stateDir = join(tempDir("toolgate-perm-"), "state"); // toolgate creates it
  await runOnce(stateDir, worker);
  expectOwnerOnly(stateDir);
});

test("a state directory an older version left 0755 with 0644 files is tightened at start", async () => {
  process.umask(0o022);
  const stateDir = join(tempDir("toolgate-perm-"), "state");
  const port = await freePort();
  // first run: real files in their real places
  await runOnce(stateDir, true, port);
  // what an older version left: everything group/world readable
  for (const m of modes(stateDir)) chmodSync(m.path, m.dir ? 0o755 : 0o644);
  mkdirSync(join(stateDir, "audit"), { recursive: true });
  writeFileSync(join(stateDir, "approvals.db-wal"), "");
  chmodSync(join(stateDir, "approvals.db-wal"), 0o644);
  expect(modes(stateDir).some((m) => m.mode === "755" || m.mode === "644")).toBe(true);
  await runOnce(stateDir, true, port);
  expectOwnerOnly(stateDir);
});
