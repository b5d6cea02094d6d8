/**
 * `toolgate policy init` and `policy test` on what it scaffolds, run as an
 * author runs them: the built CLI in a child process, the pinned opa and
 * Regal, toolgate's library added to the author's directory.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { opaPath, tempDir } from "../helpers/opa";

const root = join(__dirname, "..", "..");
let regal = "";

beforeAll(() => {
  // built once into .tools/bin (npm run tools); minutes on a first run
  regal = execFileSync("bash", [join(root, "scripts", "tools.sh"), "regal"], {
    encoding: "utf8",
    timeout: 900_000,
  }).trim();
}, 900_000);

const run = (...args: string[]) =>
  spawnSync(
    join(root, "node_modules", ".bin", "node"),
    [join(root, "bin", "toolgate.js"), ...args],
    {
      cwd: root,
      encoding: "utf8",
      env: { ...process.env, TOOLGATE_OPA: opaPath(), TOOLGATE_REGAL: regal },
      timeout: 120_000,
    },
  );

interface TestResult {
  ok: boolean;
  library: string;
  coverage: number | null;
  failures: string[];
  lint: "skipped" | { ok: boolean; violations: Array<{ rule: string; file: string }> };
}

function scaffold(...extra: string[]): string {
  const dir = join(tempDir("toolgate-init-"), "deployment");
  const r = run("policy", "init", dir, ...extra);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return dir;
}

test("policy init scaffolds a deployment that passes policy test, builds, and decides", () => {
  const dir = scaffold("--agent", "triage-bot");
  const data = JSON.parse(
    readFileSync(join(dir, "toolgate", "deployment", "data.json"), "utf8"),
  ) as {
    tools: Record<string, { class: string; stage: string; reads?: string[]; egress?: boolean }>;
    agents: Record<string, unknown>;
  };
  expect(Object.keys(data.agents)).toEqual(["triage-bot"]);
  expect(data.tools["tickets.read"]?.reads).toEqual(["customer_pii"]);
  expect(data.tools["web.post"]?.egress).toBe(true);

  const text = run("policy", "test", dir);
  expect(text.stderr).toBe("");
  expect(text.status).toBe(0);
  expect(text.stdout).toContain("library: toolgate's");
  expect(text.stdout).toContain("test: pass");
  expect(text.stdout).toMatch(/lint \(regal, .*\.regal\/config\.yaml\): ok/);

  const json = run("policy", "test", dir, "--json");
  expect(json.status).toBe(0);
  const res = JSON.parse(json.stdout) as TestResult;
  expect(res).toMatchObject({ ok: true, library: "toolgate", coverage: 100, failures: [] });
  expect(res.lint).toMatchObject({ ok: true, violations: [] });

  // the bundle carries the library: the scaffold's refund rule asks for a manager
  const bundle = join(dir, "..", "bundle.tar.gz");
  const built = run("policy", "build", dir, "-o", bundle, "--json");
  expect(built.status).toBe(0);
  expect(JSON.parse(built.stdout)).toMatchObject({
    library: "toolgate",
    entrypoints: ["toolgate/decision"],
  });
  const input = join(dir, "..", "request.json");
  const refund = (amount: number, currency = "EUR") => {
    writeFileSync(
      input,
      JSON.stringify({
        subject: { type: "user", id: "alice" },
        action: { name: "refunds.issue", properties: { arguments: { amount, currency } } },
        resource: { type: "customer", id: "cust_1" },
        context: { job: { id: "job_1", purpose: "support", customer_id: "cust_1" } },
      }),
    );
    return run("eval", "--bundle", bundle, "--agent", "triage-bot", "--input", input);
  };
  expect(refund(20).status).toBe(0); // allow
  const big = refund(250);
  expect(big.status).toBe(4); // needs_approval
  expect(big.stdout).toContain("refund_above_100");
  const xyz = refund(20, "XYZ");
  expect(xyz.status).toBe(3); // deny, by the scaffold's own rule
  expect(xyz.stdout).toContain("is not one this deployment refunds in");
  // the library's session rules see the scaffold's labels: egress with no session asks a human
  writeFileSync(
    input,
    JSON.stringify({
      subject: { type: "user", id: "alice" },
      action: { name: "web.post", properties: { arguments: {} } },
      resource: { type: "customer", id: "cust_1" },
      context: { job: { id: "job_1", purpose: "support", customer_id: "cust_1" } },
    }),
  );
  const egress = run("eval", "--bundle", bundle, "--agent", "triage-bot", "--input", input);
  expect(egress.status).toBe(4);
  expect(egress.stdout).toContain("egress_without_session");
});

test("a scaffold whose data breaks one of its tests fails policy test, naming the test", () => {
  const dir = scaffold();
  const file = join(dir, "toolgate", "deployment", "data.json");
  writeFileSync(file, readFileSync(file, "utf8").replace('"gt": 100', '"gt": 1000'));
  const r = run("policy", "test", dir);
  expect(r.status).toBe(1);
  expect(r.stdout).toContain("test: FAIL");
  expect(r.stdout).toContain("test_large_refund_needs_a_manager");
  const res = JSON.parse(run("policy", "test", dir, "--json").stdout) as TestResult;
  expect(res.ok).toBe(false);
  expect(res.failures.join("\n")).toContain("data.toolgate_test.test_large_refund_needs_a_manager");
});

test("a Regal violation fails policy test, naming the rule; --no-lint skips the lint", () => {
  const dir = scaffold();
  // opa is content with it (formatted, compiles, the test passes); Regal is not
  appendFileSync(
    join(dir, "toolgate", "rules_test.rego"),
    "\ntest_tickets_readCamelCase if {\n\tcount(deployment.tools) > 0\n}\n",
  );
  const r = run("policy", "test", dir);
  expect(r.status).toBe(1);
  expect(r.stdout).toContain("test: pass");
  expect(r.stdout).toMatch(/lint \(regal.*\): 1 violation\n/);
  expect(r.stdout).toMatch(
    /toolgate\/rules_test\.rego:\d+:\d+: prefer-snake-case \(style, error\)/,
  );
  const res = JSON.parse(run("policy", "test", dir, "--json").stdout) as TestResult;
  expect(res.ok).toBe(false);
  expect(res.lint).toMatchObject({ ok: false, violations: [{ rule: "prefer-snake-case" }] });

  const skipped = run("policy", "test", dir, "--no-lint", "--json");
  expect(skipped.status).toBe(0);
  expect(JSON.parse(skipped.stdout)).toMatchObject({ ok: true, lint: "skipped" });
});

test("a scaffold that does not compile fails policy test at check, without a lint", () => {
  const dir = scaffold();
  appendFileSync(join(dir, "toolgate", "rules.rego"), "\nbroken := {\n");
  const r = run("policy", "test", dir);
  expect(r.status).toBe(1);
  expect(r.stdout).toMatch(/check --strict: .*\n.*toolgate\/rules\.rego:\d+: rego_parse_error/);
  expect(r.stdout).toContain("lint: not run (check failed)");
});

test("policy init refuses a directory that is not empty, and leaves it as it was", () => {
  const dir = tempDir("toolgate-init-");
  writeFileSync(join(dir, "data.json"), "{}\n");
  const r = run("policy", "init", dir);
  expect(r.status).toBe(2);
  expect(r.stderr).toContain("is not empty (data.json)");
  expect(readFileSync(join(dir, "data.json"), "utf8")).toBe("{}\n");

  // a fresh `git init` is empty enough; a bad agent id is refused before anything is written
  const repo = tempDir("toolgate-init-");
  mkdirSync(join(repo, ".git"));
  expect(run("policy", "init", repo, "--agent", 'x"; y').status).toBe(2);
  expect(run("policy", "init", repo).status).toBe(0);
  expect(readFileSync(join(repo, "README.md"), "utf8")).toContain("toolgate policy test");
});
