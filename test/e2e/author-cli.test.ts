/**
 * The policy author's CLI, run as a user runs it (built bin, child process,
 * the real opa CLI): build, test, explain, replay.
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, cpSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadBundleFromPath } from "../../src/policy/bundle";
import { opaPath, tempDir } from "../helpers/opa";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const root = join(__dirname, "..", "..");
const run = (args: string[], input?: string) =>
  spawnSync(process.execPath, [join(root, "bin", "toolgate.js"), ...args], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, TOOLGATE_OPA: opaPath() },
    timeout: 120_000,
    ...(input !== undefined ? { input } : {}),
  });

test("policy build gives the committed bundle's revision for rego/, with the runtime's capabilities", async () => {
  const out = join(tempDir(), "b.tar.gz");
  const r = run(["policy", "build", "rego", "-o", out, "--json"]);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  const built = JSON.parse(r.stdout) as { revision: string; entrypoints: string[] };
  expect(built.revision).toBe(
    (await loadBundleFromPath(join(root, "bundles", "support-triage.tar.gz"))).manifest.revision,
  );
  expect(built.entrypoints).toEqual(["toolgate/decision"]);
});

test("policy build refuses a builtin the runtime lacks", () => {
  const dir = tempDir();
  cpSync(join(root, "rego", "capabilities.json"), join(dir, "capabilities.json"));
  writeFileSync(
    join(dir, "p.rego"),
    'package toolgate\nimport rego.v1\ndecision := http.send({"method": "GET", "url": "http://127.0.0.1:1"})\n',
  );
  const r = run(["policy", "build", dir, "-o", join(dir, "out.tar.gz")]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/http\.send|undefined function/);
});

test("policy test runs fmt, check --strict and tests with coverage", () => {
  const r = run(["policy", "test", "rego", "--json"]);
  expect(r.status).toBe(0);
  const res = JSON.parse(r.stdout) as { ok: boolean; coverage: number; unformatted: string[] };
  expect(res.ok).toBe(true);
  expect(res.unformatted).toEqual([]);
  expect(res.coverage).toBeGreaterThanOrEqual(90);
});

test("explain: reasons and the rule-level trace", () => {
  const dir = tempDir();
  const input = join(dir, "in.json");
  writeFileSync(
    input,
    JSON.stringify(refRequest({ user: "carol", tool: "refunds.issue", args: { amount: 20 } })),
  );
  const r = run([
    "explain",
    "--bundle",
    "bundles/support-triage.tar.gz",
    "--rego",
    "rego",
    "--input",
    input,
  ]);
  expect(r.status).toBe(0);
  expect(r.stdout).toContain("outcome: deny");
  expect(r.stdout).toContain("role_not_permitted");
  expect(r.stdout).toContain("rule trace (opa eval --explain=fails)");
  expect(r.stdout).toContain("Enter data.toolgate.decision");
  expect(r.stdout).toMatch(/Fail .*role/);
});

test("replay: a candidate with a lower refund threshold changes the recorded decisions, naming redacted fields", async () => {
  // a trail from a real sidecar
  const tg = await startTestToolgate();
  const trailDir = tg.config.audit.trail.dir;
  for (const amount of [20, 30, 120]) {
    await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({ tool: "refunds.issue", args: { amount, password: "s3cret-value-123" } }),
    );
  }
  await postJson(tg.agentServer.url, "/v1/decisions", refRequest({ tool: "tickets.read" }));
  await tg.stop();

  // the candidate: approvals above 10 instead of 50
  const dir = tempDir();
  cpSync(join(root, "rego"), join(dir, "rego"), { recursive: true });
  const dataFile = join(dir, "rego", "toolgate", "deployment", "data.json");
  writeFileSync(dataFile, readFileSync(dataFile, "utf8").replace('"gt": 50', '"gt": 10'));
  const candidate = join(dir, "candidate.tar.gz");
  expect(run(["policy", "build", join(dir, "rego"), "-o", candidate]).status).toBe(0);

  const r = run(["replay", "--audit", trailDir, "--bundle", candidate, "--json"]);
  expect(r.status).toBe(0);
  const res = JSON.parse(r.stdout) as {
    summary: {
      decisions: number;
      changed: number;
      trail_ok: boolean;
      with_redacted_fields: number;
    };
    changes: Array<{
      tool: string;
      recorded: { outcome: string };
      candidate: { outcome: string };
      redacted_fields: string[];
    }>;
  };
  expect(res.summary).toMatchObject({
    decisions: 4,
    changed: 2,
    trail_ok: true,
    with_redacted_fields: 3,
  });
  for (const c of res.changes) {
    expect(c).toMatchObject({
      tool: "refunds.issue",
      recorded: { outcome: "allow" },
      candidate: { outcome: "needs_approval" },
    });
    expect(c.redacted_fields).toEqual(["/arguments/password"]);
  }
  const text = run(["replay", "--audit", trailDir, "--bundle", candidate]);
  expect(text.stdout).toContain("replayed 4 decisions against candidate.tar.gz: 2 would change");
});

test("replay: a tampered trail's malformed decision records are counted and skipped, not a crash", async () => {
  const tg = await startTestToolgate();
  const trailDir = tg.config.audit.trail.dir;
  await postJson(tg.agentServer.url, "/v1/decisions", refRequest({ tool: "tickets.read" }));
  await tg.stop();
  // a line appended by hand: a decision record that is null, and one missing its subject
  const file = readdirSync(trailDir)
    .filter((f) => f.endsWith(".jsonl"))
    .sort()
    .at(-1) as string;
  appendFileSync(join(trailDir, file), '{"seq":99,"kind":"decision","record":null}\n');
  appendFileSync(
    join(trailDir, file),
    '{"seq":100,"kind":"decision","record":{"decision_id":"x","time":"t","outcome":"allow"}}\n',
  );
  const r = run([
    "replay",
    "--audit",
    trailDir,
    "--bundle",
    "bundles/support-triage.tar.gz",
    "--json",
  ]);
  expect(r.status).toBe(0);
  const res = JSON.parse(r.stdout) as {
    summary: { decisions: number; malformed: number; trail_ok: boolean };
  };
  expect(res.summary).toMatchObject({ decisions: 1, malformed: 2, trail_ok: false });
  expect(r.stderr).toContain("skipped 2 decision record(s)");
});
