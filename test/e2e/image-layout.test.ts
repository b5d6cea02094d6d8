/**
 * The container image's layout, checked without a Docker daemon: the runtime
 * stage of the Dockerfile is replayed into a temp directory standing in for
 * its WORKDIR — exactly its COPY lines (from the build context, or from the
 * build stage: this tree after `npm run build`), its `npm ci` as written —
 * then the image's ENTRYPOINT + CMD is started with the image's ENV (ports
 * remapped to free ones, the state dir to a temp dir) and must get ready.
 * A missing COPY, or a runtime need on a devDependency, fails here.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { execForm, parseCopy, parseDockerfile, parseEnv, type Stage } from "../helpers/dockerfile";
import { http } from "../helpers/toolgate";
import { freePort } from "../helpers/net";

const root = join(__dirname, "..", "..");
const dockerfile = parseDockerfile(join(root, "Dockerfile"));
const runtime = dockerfile.stages[dockerfile.stages.length - 1]!;
const build = dockerfile.stages.find((s) => s.name === "build");

function workdir(stage: Stage): string {
  const w = stage.instructions.filter((i) => i.op === "WORKDIR").pop();
  if (!w) throw new Error(`stage ${stage.name ?? "?"} has no WORKDIR`);
  return w.args;
}

/** The runtime stage's facts, as the Dockerfile states them. */
const WORKDIR = workdir(runtime);
const ENV: Record<string, string> = Object.assign(
  {},
  ...runtime.instructions.filter((i) => i.op === "ENV").map((i) => parseEnv(i.args)),
) as Record<string, string>;
const ENTRYPOINT = execForm(runtime.instructions.filter((i) => i.op === "ENTRYPOINT").pop()!.args);
const CMD = execForm(runtime.instructions.filter((i) => i.op === "CMD").pop()!.args);
const HEALTHCHECK = runtime.instructions.filter((i) => i.op === "HEALTHCHECK").pop()!.args;
const COPIES = runtime.instructions.filter((i) => i.op === "COPY").map((i) => parseCopy(i.args));
const NPM_CI = runtime.instructions
  .filter((i) => i.op === "RUN")
  .flatMap((i) => i.args.split("&&").map((s) => s.trim()))
  .filter((s) => s.startsWith("npm ci"));

/** `!pattern` lines of .dockerignore (it ignores everything else). */
const allowed = readFileSync(join(root, ".dockerignore"), "utf8")
  .split("\n")
  .filter((l) => l.startsWith("!"))
  .map((l) => l.slice(1).replace(/\/\*\*$/, ""));

function inContext(src: string): boolean {
  return allowed.some((a) => src === a || src.startsWith(a + "/"));
}

/** Where a COPY source comes from on this machine. */
function sourcePath(from: string | undefined, src: string): string {
  if (from === undefined) {
    if (!inContext(src))
      throw new Error(`COPY ${src}: excluded from the build context by .dockerignore`);
    return join(root, src);
  }
  if (from !== build?.name) throw new Error(`COPY --from=${from}: unknown stage`);
  // the build stage is this tree: its WORKDIR holds what it copied plus `npm run build` output
  const rel = posix.relative(workdir(build), posix.resolve(workdir(build), src));
  if (rel.startsWith("..")) throw new Error(`COPY --from=build ${src}: outside the build WORKDIR`);
  const copied = build.instructions
    .filter((i) => i.op === "COPY")
    .flatMap((i) => parseCopy(i.args).sources)
    .some((s) => rel === s || rel.startsWith(s + "/"));
  const built = rel === "dist" || rel.startsWith("dist/");
  if (!copied && !built)
    throw new Error(`COPY --from=build ${src}: the build stage neither copies nor builds it`);
  return join(root, rel);
}

/** Replays the runtime stage's COPY lines into dir (skipping any source for which skip() is true). */
function layOut(dir: string, skip: (src: string) => boolean = () => false): void {
  for (const c of COPIES) {
    const destAbs = posix.resolve(WORKDIR, c.dest);
    const rel = posix.relative(WORKDIR, destAbs);
    if (rel.startsWith("..")) throw new Error(`COPY to ${c.dest}: outside WORKDIR ${WORKDIR}`);
    for (const src of c.sources) {
      if (skip(src)) continue;
      const from = sourcePath(c.from, src);
      if (!existsSync(from))
        throw new Error(`COPY ${src}: ${from} does not exist (was the tree built?)`);
      const target =
        c.dest.endsWith("/") || c.sources.length > 1
          ? join(dir, rel, posix.basename(src))
          : join(dir, rel);
      cpSync(from, target, { recursive: true });
    }
  }
}

/** Maps the image's command onto the laid-out directory and this machine's Node. */
function command(dir: string): string[] {
  let argv = [...ENTRYPOINT, ...CMD];
  if (argv[0]!.endsWith("/tini")) argv = argv.slice(argv[1] === "--" ? 2 : 1);
  return argv.map((a, i) => {
    if (i === 0 && a === "node") return process.execPath;
    return a.startsWith(WORKDIR + "/") ? join(dir, a.slice(WORKDIR.length + 1)) : a;
  });
}

interface Started {
  child: ChildProcess;
  env: Record<string, string>;
  agentUrl: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

async function start(dir: string): Promise<Started> {
  const agentPort = await freePort();
  const controlPort = await freePort();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: dir,
    ...ENV,
    TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-image-state-")),
    TOOLGATE_AGENT_PORT: String(agentPort),
    TOOLGATE_CONTROL_PORT: String(controlPort),
    OTEL_SDK_DISABLED: "true",
  };
  const [cmd, ...args] = command(dir);
  const child = spawn(cmd!, args, { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, env, agentUrl: `http://127.0.0.1:${agentPort}`, stderr: () => err, exited };
}

/** Polls /health/ready until it answers or the process exits; never a wall-clock assertion. */
async function readiness(s: Started): Promise<number | "exited"> {
  let gone = false;
  void s.exited.then(() => (gone = true));
  for (;;) {
    if (gone) return "exited";
    try {
      const r = await http(s.agentUrl, "GET", "/health/ready");
      return r.status;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "toolgate-image-"));
  layOut(dir);
  for (const c of NPM_CI) {
    const [npm, ...args] = c.split(/\s+/);
    const r = spawnSync(npm!, args, { cwd: dir, encoding: "utf8", env: process.env });
    if (r.status !== 0) throw new Error(`${c} failed in ${dir}:\n${r.stdout}\n${r.stderr}`);
  }
}, 600_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("Dockerfile (read as written)", () => {
  test("runtime stage: pinned base, non-root numeric user, tini, production install, healthcheck", () => {
    expect(runtime.from).toMatch(/^node:\d+\.\d+\.\d+-[a-z]+-slim(@sha256:[a-f0-9]{64})?$/);
    expect(build?.from).toBe(runtime.from);
    const user = runtime.instructions.filter((i) => i.op === "USER").pop()?.args;
    expect(user).toMatch(/^[1-9]\d*(:[1-9]\d*)?$/);
    expect(ENTRYPOINT.slice(0, 2)).toEqual(["/usr/bin/tini", "--"]);
    expect(NPM_CI).toHaveLength(1);
    expect(NPM_CI[0]).toMatch(/--omit=dev/);
    expect(HEALTHCHECK).toMatch(/CMD \["node", "\/app\/scripts\/healthcheck\.mjs"\]/);
    expect(HEALTHCHECK).not.toMatch(/curl|wget/);
    // the agent port is not moved off loopback by the image
    expect(ENV.TOOLGATE_AGENT_HOST).toBeUndefined();
    expect(ENV.TOOLGATE_STATE_DIR).toBe("/var/lib/toolgate");
  });
});

describe("the image's layout (runtime stage replayed into a temp dir)", () => {
  test("holds only what runs, and production dependencies only", () => {
    for (const p of ["dist/src/cli/main.js", "bin/toolgate.js", "bundles/support-triage.tar.gz"])
      expect(existsSync(join(dir, p))).toBe(true);
    for (const p of [
      "src",
      "test",
      "rego",
      "tools",
      "docs",
      "node_modules/typescript",
      "node_modules/node",
      "node_modules/jest",
    ])
      expect(existsSync(join(dir, p))).toBe(false);
  });

  test("the image's command starts, gets ready, passes its HEALTHCHECK and stops cleanly on SIGTERM", async () => {
    const s = await start(dir);
    try {
      const status = await readiness(s);
      if (status !== 200) throw new Error(`not ready (${status}):\n${s.stderr()}`);
      const live = await http(s.agentUrl, "GET", "/health/live");
      expect(live.status).toBe(200);
      // HEALTHCHECK CMD ["node", "/app/scripts/healthcheck.mjs"], with the container's env
      const hc = JSON.parse(HEALTHCHECK.replace(/^.*?CMD\s+/, "")) as string[];
      const [hcCmd, ...hcArgs] = hc.map((a, i) =>
        i === 0 && a === "node" ? process.execPath : a.replace(WORKDIR + "/", dir + "/"),
      );
      const r = spawnSync(hcCmd!, hcArgs, { env: s.env, encoding: "utf8" });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
      s.child.kill("SIGTERM");
      expect(await s.exited).toBe(0);
    } finally {
      s.child.kill("SIGKILL");
    }
  }, 60_000);

  test("the HEALTHCHECK fails when nothing answers", () => {
    const r = spawnSync(process.execPath, [join(dir, "scripts/healthcheck.mjs")], {
      env: { PATH: process.env.PATH ?? "", TOOLGATE_AGENT_PORT: "1" },
      encoding: "utf8",
    });
    expect(r.status).toBe(1);
  });

  test("a missing COPY fails: without bundles/ the image never gets ready", async () => {
    const partial = mkdtempSync(join(tmpdir(), "toolgate-image-partial-"));
    try {
      layOut(partial, (src) => src === "bundles");
      symlinkSync(join(dir, "node_modules"), join(partial, "node_modules"));
      const s = await start(partial);
      try {
        expect(await readiness(s)).not.toBe(200);
      } finally {
        s.child.kill("SIGKILL");
      }
    } finally {
      rmSync(partial, { recursive: true, force: true });
    }
  }, 60_000);
});
