/**
 * PACKAGING (slow: `npm pack` + `npm install` of the tarball, about 20–40 s
 * from the warm npm cache) — issue #17. What a user gets from the npm
 * package, installed into an empty project with production dependencies only:
 *
 * - `toolgate/client` loads nothing but the client (no express, pg, winston,
 *   opa-wasm, OpenTelemetry, no server module of toolgate), in CommonJS and
 *   as ESM, and also on the system's Node 20 when there is one;
 * - `toolgate/verify` loads the verifier, jose and the small shared modules
 *   it needs — no server module either;
 * - `npx toolgate version` runs, and `toolgate serve` from the package (its
 *   bundles/, schemas/, config/dev/ shipped by package.json "files") answers
 *   the installed client.
 *
 * Needs dist/ built (`npm run build`): the tarball packs dist/src.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { freePort } from "../helpers/net";

const root = join(__dirname, "..", "..");
const version = (
  JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }
).version;
/** Children run on this Node (24): npm and the package's bin find it first on PATH. */
const env = {
  ...process.env,
  PATH: dirname(process.execPath) + delimiter + (process.env.PATH ?? ""),
  npm_config_update_notifier: "false",
};

let work: string;
let project: string;
let packed: string[];

/** Runs a script in the installed project; prints JSON of the modules it loaded. */
function loads(code: string, opts: { node?: string; esm?: boolean } = {}): string[] {
  // every resolution (CommonJS and ESM, e.g. jose's ESM build) through a module hook,
  // plus require.cache for runtimes without module.registerHooks
  const prelude = `
    const seen = new Set();
    const mod = require("node:module");
    if (typeof mod.registerHooks === "function")
      mod.registerHooks({ resolve(s, c, next) { const r = next(s, c); seen.add(r.url); return r; } });
    process.on("exit", () => {
      for (const k of Object.keys(require.cache)) seen.add(k);
      process.stdout.write(JSON.stringify([...seen].filter((u) => !u.startsWith("node:"))));
    });
  `;
  const file = join(project, opts.esm ? "probe.mjs" : "probe.cjs");
  writeFileSync(
    file,
    opts.esm
      ? `import { createRequire } from "node:module"; const require = createRequire(import.meta.url);\n${prelude}\nawait import("./probe-body.mjs");\n`
      : `${prelude}\n${code}\n`,
  );
  if (opts.esm) writeFileSync(join(project, "probe-body.mjs"), code);
  const out = execFileSync(opts.node ?? process.execPath, [file], {
    cwd: project,
    env,
    encoding: "utf8",
  });
  return (JSON.parse(out) as string[]).map((u) =>
    u.replace(/^file:\/\//, "").replace(project + "/", ""),
  );
}

const SERVER_PACKAGES = [
  "express",
  "pg",
  "winston",
  "@open-policy-agent",
  "@opentelemetry",
  "ajv",
  "prom-client",
  "openid-client",
  "tar-stream",
  "yaml",
  "@modelcontextprotocol",
  "zod",
];
const serverModules = (files: string[]) =>
  files.filter((f) => SERVER_PACKAGES.some((p) => f.includes(`node_modules/${p}/`)));

beforeAll(() => {
  const entry = join(root, "dist", "src", "client", "index.js");
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run npm run build first`);
  work = mkdtempSync(join(tmpdir(), "toolgate-pack-"));
  const pack = execFileSync("npm", ["pack", "--json", "--pack-destination", work], {
    cwd: root,
    env,
    encoding: "utf8",
  });
  const info = (JSON.parse(pack) as Array<{ filename: string; files: Array<{ path: string }> }>)[0];
  if (info === undefined) throw new Error("npm pack printed no result");
  packed = info.files.map((f) => f.path);
  project = join(work, "project");
  execFileSync("mkdir", ["-p", project]);
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({ name: "consumer", version: "1.0.0", private: true }),
  );
  execFileSync(
    "npm",
    [
      "install",
      join(work, info.filename),
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      "--omit=dev",
      "--ignore-scripts",
      "--loglevel=error",
    ],
    { cwd: project, env, encoding: "utf8", stdio: "pipe" },
  );
}, 300_000);

afterAll(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

test("the tarball holds what runs, not the sources, tests or maps", () => {
  for (const need of [
    "bin/toolgate.js",
    "dist/src/cli/main.js",
    "dist/src/client/index.js",
    "dist/src/client/index.d.ts",
    "dist/src/grants/verify.js",
    "dist/src/audit/worker.js",
    "bundles/support-triage.tar.gz",
    "schemas/decision-request.schema.json",
    "config/dev/dev-signing-key.pub.pem",
    "rego/toolgate/decision.rego",
    "rego/capabilities.json",
    "scripts/healthcheck.mjs",
    "templates/policy-init/toolgate/rules_test.rego",
    "tools/regal/go.mod",
    "package.json",
  ])
    expect(packed).toContain(need);
  const stray = packed.filter(
    (p) =>
      /^(src|test|docs|helm|examples|tools|node_modules)\/|\.map$|^dist\/test\//.test(p) &&
      !/^tools\/regal\/go\.(mod|sum)$/.test(p),
  );
  expect(stray).toEqual([]);
  // no module left in dist/ by a source since deleted or renamed (prepack prunes them)
  const orphans = packed.filter(
    (p) =>
      p.startsWith("dist/src/") &&
      !existsSync(join(root, "src", p.slice("dist/src/".length).replace(/\.(d\.ts|js)$/, ".ts"))),
  );
  expect(orphans).toEqual([]);
});

test("toolgate/client (CommonJS) loads only the client", () => {
  const files = loads(`
    const { createClient, ToolDenied, ToolgateError } = require("toolgate/client");
    if (typeof createClient !== "function" || typeof ToolDenied !== "function" || typeof ToolgateError !== "function") process.exit(3);
  `);
  expect(files).toContain("node_modules/toolgate/dist/src/client/index.js");
  expect(
    files.filter(
      (f) => !f.startsWith("node_modules/toolgate/dist/src/client/") && !f.endsWith("probe.cjs"),
    ),
  ).toEqual([]);
});

test("toolgate/client as ESM: named imports, only the client", () => {
  const files = loads(
    `import { createClient, ToolDenied } from "toolgate/client";
     if (typeof createClient !== "function" || typeof ToolDenied !== "function") process.exit(3);`,
    { esm: true },
  );
  expect(files).toContain("node_modules/toolgate/dist/src/client/index.js");
  expect(
    files.filter(
      (f) =>
        !f.startsWith("node_modules/toolgate/dist/src/client/") && !/probe(-body)?\.mjs$/.test(f),
    ),
  ).toEqual([]);
});

test("toolgate/verify loads the verifier, jose and shared helpers — no server module", () => {
  const files = loads(`
    const v = require("toolgate/verify");
    if (typeof v.createGrantVerifier !== "function" && Object.keys(v).length === 0) process.exit(3);
  `);
  expect(files).toContain("node_modules/toolgate/dist/src/grants/verify.js");
  expect(serverModules(files)).toEqual([]);
  const ours = files.filter((f) => f.startsWith("node_modules/toolgate/"));
  const allowed =
    /^node_modules\/toolgate\/dist\/src\/(grants\/verify|approvals\/binding|errors\/\w+|shared\/\w+)\.js$/;
  expect(ours.filter((f) => !allowed.test(f))).toEqual([]);
  for (const dir of [
    "http",
    "control",
    "console",
    "audit",
    "bundles",
    "policy",
    "decision",
    "fleet",
    "telemetry",
    "identity",
    "config",
    "cli",
  ])
    expect(ours.filter((f) => f.includes(`/dist/src/${dir}/`))).toEqual([]);
});

const node20 = "/usr/bin/node";
const hasNode20 =
  existsSync(node20) &&
  /^v20\./.test(spawnSync(node20, ["--version"], { encoding: "utf8" }).stdout ?? "");
(hasNode20 ? test : test.skip)("toolgate/client runs on Node 20 (fetch only)", () => {
  const r = spawnSync(
    node20,
    [
      "-e",
      `const { createClient, ToolgateError } = require("toolgate/client");
       createClient({ url: "http://127.0.0.1:9", timeoutMs: 2000 }).decide({})
         .then(() => process.exit(1), (e) => { process.stdout.write(e instanceof ToolgateError ? e.code : String(e)); });`,
    ],
    { cwd: project, encoding: "utf8" },
  );
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe("network_error");
});

test("npx toolgate version", () => {
  const r = spawnSync("npx", ["--no-install", "toolgate", "version"], {
    cwd: project,
    env,
    encoding: "utf8",
    timeout: 60_000,
  });
  expect(r.stderr).toBe("");
  expect(r.stdout.trim()).toContain(version);
  expect(r.status).toBe(0);
});

describe("toolgate serve from the package answers the installed client", () => {
  let child: ChildProcess | undefined;
  let agent: string;
  let log = "";
  beforeAll(async () => {
    const [a, c] = [await freePort(), await freePort()];
    agent = `http://127.0.0.1:${a}`;
    child = spawn(join(project, "node_modules", ".bin", "toolgate"), ["serve"], {
      cwd: project,
      env: {
        ...env,
        TOOLGATE_AGENT_PORT: String(a),
        TOOLGATE_CONTROL_PORT: String(c),
        TOOLGATE_STATE_DIR: join(work, "state"),
        TOOLGATE_LOG_LEVEL: "error",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (b: Buffer) => (log += b.toString()));
    child.stderr?.on("data", (b: Buffer) => (log += b.toString()));
    const until = Date.now() + 30_000;
    for (;;) {
      const ok = await fetch(`${agent}/health/ready`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > until || child.exitCode !== null)
        throw new Error(`toolgate serve did not get ready:\n${log}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }, 60_000);
  afterAll(async () => {
    if (child?.exitCode === null) {
      const exited = new Promise((r) => child?.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  });

  test("decide: allow for tickets.read, deny for billing.update", () => {
    const r = spawnSync(
      process.execPath,
      [
        "-e",
        `const { createClient, ToolDenied } = require("toolgate/client");
         const tg = createClient({ url: process.argv[1] });
         const who = { subject: { type: "user", id: "alice" }, resource: { type: "customer", id: "cust_1" },
                       context: { job: { id: "j1", purpose: "support_triage", customer_id: "cust_1" } } };
         (async () => {
           const read = tg.guard("tickets.read", async (_a, call) => typeof call.grant, () => who);
           const update = tg.guard("billing.update", async () => "ran", () => who);
           const out = [await read({})];
           try { await update({}); out.push("ran"); } catch (e) { out.push(e instanceof ToolDenied ? e.code : String(e)); }
           process.stdout.write(JSON.stringify(out));
         })();`,
        agent,
      ],
      { cwd: project, env, encoding: "utf8", timeout: 30_000 },
    );
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual(["string", "not_granted"]);
  });
});
