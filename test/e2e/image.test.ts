/**
 * The container image, built and run for real without a Docker daemon:
 * scripts/image.sh builds the Dockerfile as written with buildah (its RUN
 * steps install Debian's tini and run `npm ci` against the real registries),
 * and podman runs the result with runc — a real container: its own root
 * filesystem and PID namespace, the image's USER, ENTRYPOINT, CMD, ENV and
 * HEALTHCHECK, a published port.
 *
 * The quick start in docs/deploy.md is run as written (the `openssl` lines
 * and the `docker run` arguments, only the host port and the image name
 * mapped to this machine's) and must get ready; trusted mode off loopback
 * must still refuse to start.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { importPKCS8, SignJWT } from "jose";
import { http, postJson, refRequest } from "../helpers/toolgate";
import { freePort } from "../helpers/net";

const root = join(__dirname, "..", "..");
const script = join(root, "scripts", "image.sh");
const MINUTE = 60_000;

/** podman on the script's image store, with its runtime settings. */
function podman(args: string[], timeout = 2 * MINUTE) {
  const r = spawnSync("bash", [script, "podman", ...args], { encoding: "utf8", timeout });
  // podman logs (but survives) its missing systemd for healthcheck timers
  const stderr = r.stderr
    .split("\n")
    .filter((l) => !/level=(error|warning) msg=".*(healthcheck|systemd)/.test(l))
    .join("\n");
  return { status: r.status, stdout: r.stdout, stderr };
}

function ok(args: string[]): string {
  const r = podman(args);
  if (r.status !== 0)
    throw new Error(`podman ${args.join(" ")}: exit ${r.status}\n${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

/** A container's output (toolgate logs JSON lines to stdout). */
function logs(container: string): string {
  const r = podman(["logs", container]);
  return r.stdout + r.stderr;
}

const run = `toolgate-image-test-${process.pid}`;
let serial = 0;
const containers: string[] = [];
const volumes: string[] = [];
const dirs: string[] = [];
const name = () => {
  const n = `${run}-${++serial}`;
  containers.push(n);
  return n;
};

let image = "";

beforeAll(() => {
  // cold: ~100 s on 2 cores (base from mmdebstrap + the npm registry, npm ci
  // twice, tsc); warm: ~2 s (buildah's layer cache)
  const r = spawnSync("bash", [script, "build"], { encoding: "utf8", timeout: 40 * MINUTE });
  if (r.status !== 0)
    throw new Error(`scripts/image.sh build: exit ${r.status}\n${r.stderr.slice(-6000)}`);
  image = r.stdout.trim().split("\n").pop()!;
}, 45 * MINUTE);

afterAll(() => {
  for (const c of containers) podman(["rm", "--force", "--volumes", "--time", "0", c]);
  for (const v of volumes) podman(["volume", "rm", "--force", v]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Polls /health/ready until it answers 200 or the container stops. */
async function ready(container: string, url: string): Promise<{ status: number; body: unknown }> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    try {
      const r = await http(url, "GET", "/health/ready");
      if (r.status === 200) return { status: r.status, body: r.json };
    } catch {
      // not listening yet
    }
    const state = podman(["inspect", "--format", "{{.State.Status}}", container]).stdout.trim();
    if (state !== "running" && state !== "created" && state !== "configured")
      throw new Error(`container ${state} before ready:\n${logs(container)}`);
    if (Date.now() > deadline) throw new Error(`not ready in 90 s:\n${logs(container)}`);
    await new Promise((res) => setTimeout(res, 300));
  }
}

/** The quick start in docs/deploy.md: its commands, backslash continuations joined. */
function quickStart(): string[] {
  const doc = readFileSync(join(root, "docs", "deploy.md"), "utf8");
  const section = doc.slice(doc.indexOf("## The container image"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error("docs/deploy.md: no sh block under 'The container image'");
  return block
    .replace(/\\\n\s*/g, "")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

/** A shell line's words as bash splits and expands them, in cwd. */
function words(line: string, cwd: string): string[] {
  const r = spawnSync("bash", ["-c", `w() { printf '%s\\0' "$@"; }; w ${line}`], {
    cwd,
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`bash could not read: ${line}\n${r.stderr}`);
  return r.stdout.split("\0").slice(0, -1);
}

describe("the image, built by buildah and run by podman", () => {
  let docsRun: { container: string; url: string; dir: string } | undefined;

  test("the quick start in docs/deploy.md, as written, runs the image and it gets ready on the published port", async () => {
    const lines = quickStart();
    const build = lines.find((l) => l.startsWith("docker build "));
    const runLine = lines.find((l) => l.startsWith("docker run "));
    const probe = lines.find((l) => l.startsWith("curl "));
    expect(build && runLine && probe).toBeTruthy();
    const dir = mkdtempSync(join(tmpdir(), "toolgate-image-qs-"));
    dirs.push(dir);

    // every other command (the key pair) runs as written
    for (const l of lines.filter((l) => !l.startsWith("docker ") && l !== probe)) {
      const r = spawnSync("bash", ["-c", l], { cwd: dir, encoding: "utf8" });
      expect({ line: l, status: r.status, stderr: r.stderr }).toMatchObject({ status: 0 });
    }

    const argv = words(runLine!.slice("docker run ".length), dir);
    const documentedImage = argv[argv.length - 1]!;
    // the image it runs is the one the build line tags
    expect(words(build!.slice("docker build ".length), dir)).toContain(documentedImage);
    const port = await freePort();
    let published = false;
    const args = argv.slice(0, -1).flatMap((a, i, all): string[] => {
      if (a === "--rm") return []; // removed in afterAll, so its logs stay readable on failure
      const m = /^127\.0\.0\.1:(\d+):(\d+)$/.exec(a);
      if (m && all[i - 1] === "-p") {
        published = true;
        return [`127.0.0.1:${port}:${m[2]}`];
      }
      return [a];
    });
    expect(published).toBe(true);
    const container = name();
    ok(["run", "--detach", "--name", container, ...args, image]);
    const url = `http://127.0.0.1:${port}`;
    expect(probe).toContain("localhost:8181/health/ready");
    const r = await ready(container, url);
    expect(r.body).toMatchObject({ status: "ok", bundle: "support-triage" });
    docsRun = { container, url, dir };
  });

  test("it runs as uid 10001 under tini, serves decisions to tokens signed with the quick start's key, and passes its HEALTHCHECK", async () => {
    expect(docsRun).toBeDefined();
    const { container, url, dir } = docsRun!;
    // every process in the container, as the host sees it
    const top = ok(["top", container, "pid", "huser", "args"]).split("\n").slice(1);
    expect(top.length).toBeGreaterThanOrEqual(2);
    for (const p of top) expect(p.trim().split(/\s+/)[1]).toBe("10001");
    expect(top.find((p) => p.trim().startsWith("1 "))).toMatch(/\/usr\/bin\/tini -- node /);
    expect(ok(["exec", container, "id", "-u"])).toBe("10001");

    // the HEALTHCHECK survived the build (docker format) and passes
    expect(ok(["inspect", "--format", "{{json .Config.Healthcheck.Test}}", container])).toBe(
      '["CMD","node","/app/scripts/healthcheck.mjs"]',
    );
    expect(podman(["healthcheck", "run", container]).status).toBe(0);

    // identity.mode jwt with the quick start's key: a token it signed is accepted, none is not
    const key = await importPKCS8(readFileSync(join(dir, "agent-jwt.key"), "utf8"), "EdDSA");
    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({ roles: [] })
      .setProtectedHeader({ alg: "EdDSA" })
      .setIssuer("toolgate-dev")
      .setAudience("toolgate-agent")
      .setSubject("alice")
      .setIssuedAt(now - 5)
      .setExpirationTime(now + 300)
      .sign(key);
    const req = refRequest({ tool: "accounts.summary.read" });
    const anonymous = await postJson(url, "/v1/decisions", req);
    expect(anonymous.status).toBe(401);
    const allowed = await postJson(url, "/v1/decisions", req, { authorization: `Bearer ${jwt}` });
    expect(allowed.status).toBe(200);
    expect(allowed.json).toMatchObject({ outcome: "allow" });
  });

  test("SIGTERM (docker stop) reaches node through tini: a clean exit (status 0) before the stop timeout would kill it", () => {
    expect(docsRun).toBeDefined();
    const { container } = docsRun!;
    ok(["stop", "--time", "20", container]);
    const [code, oomOrKilled] = ok([
      "inspect",
      "--format",
      "{{.State.ExitCode}} {{.State.OOMKilled}}",
      container,
    ]).split(" ");
    expect({ code, oomOrKilled }).toEqual({ code: "0", oomOrKilled: "false" });
    expect(logs(container)).toMatch(/"event":"server\.stopping".*"SIGTERM"/);
  }, 60_000);

  test("off loopback, trusted identity (the default) still refuses to start; so does jwt with the development key", () => {
    const trusted = podman(["run", "--rm", "-e", "TOOLGATE_AGENT_HOST=0.0.0.0", image]);
    expect(trusted.status).toBe(2);
    expect(trusted.stderr).toContain("config_invalid");
    expect(trusted.stderr).toContain("trusted identity is allowed only on loopback");

    const devKey = podman([
      "run",
      "--rm",
      "-e",
      "TOOLGATE_AGENT_HOST=0.0.0.0",
      "-e",
      "TOOLGATE_IDENTITY_MODE=jwt",
      image,
    ]);
    expect(devKey.status).toBe(2);
    expect(devKey.stderr).toContain("config_invalid");
    expect(devKey.stderr).toContain("trusts the committed development key");
  }, 60_000);

  test("with a read-only root filesystem and a named volume for its state (docs/deploy.md) it gets ready", async () => {
    const volume = `${run}-state`;
    volumes.push(volume);
    const container = name();
    const port = await freePort();
    ok([
      "run",
      "--detach",
      "--name",
      container,
      "--read-only",
      "--read-only-tmpfs=false", // as Docker's --read-only: no tmpfs on /tmp, /run
      "-v",
      `${volume}:/var/lib/toolgate`,
      "-p",
      `127.0.0.1:${port}:8181`,
      "-e",
      "TOOLGATE_AGENT_HOST=0.0.0.0",
      "-e",
      "TOOLGATE_IDENTITY_MODE=jwt",
      "-e",
      "TOOLGATE_IDENTITY_JWT_PUBLIC_KEY_FILE=/etc/toolgate/agent-jwt.pub",
      "-v",
      `${join(docsRun?.dir ?? "/nonexistent", "agent-jwt.pub")}:/etc/toolgate/agent-jwt.pub:ro`,
      image,
    ]);
    await ready(container, `http://127.0.0.1:${port}`);
    // the state went to the volume, owned by the image's user, mode 0700
    expect(ok(["exec", container, "stat", "-c", "%u %a", "/var/lib/toolgate"])).toBe("10001 700");
    expect(ok(["exec", container, "ls", "/var/lib/toolgate"]).split("\n")).toContain(
      "approvals.db",
    );
    const write = podman(["exec", container, "touch", "/app/x"]);
    expect(write.status).not.toBe(0);
    expect(write.stderr).toContain("Read-only file system");
  });

  test(
    "its size: production dependencies only (the build stage's devDependencies stay out)",
    () => {
      const r = spawnSync("bash", [script, "size"], { encoding: "utf8", timeout: 5 * MINUTE });
      expect(r.status).toBe(0);
      const m = /uncompressed=(\d+) compressed=(\d+)/.exec(r.stdout);
      expect(m).not.toBeNull();
      const [uncompressed, compressed] = [Number(m![1]), Number(m![2])];
      process.stdout.write(
        `image ${image}: ${(uncompressed / 1e6).toFixed(0)} MB uncompressed, ${(compressed / 1e6).toFixed(0)} MB compressed (gzip layers)\n`,
      );
      // Node 24 with its headers and npm on Debian slim is ~330 MB of it; the
      // build stage with every devDependency is ~1 GB
      expect(uncompressed).toBeLessThan(450e6);
      const dev = podman([
        "run",
        "--rm",
        "--entrypoint",
        "node",
        image,
        "-e",
        "require.resolve('typescript')",
      ]);
      expect(dev.status).not.toBe(0);
    },
    5 * MINUTE,
  );
});
