/**
 * The PostgreSQL test and development infrastructure: `npm run postgres:start|stop` (scripts/postgres.mjs), the
 * jest run's server (TOOLGATE_TEST_POSTGRES_URL) with freshDatabase() isolation, and the clean-up of servers whose
 * owner died (watchdog, stale directories of killed jest runs).
 */
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Client } from "pg";
import { freshDatabase, postgresAdminUrl } from "../helpers/postgres";

const ROOT = path.resolve(__dirname, "..", "..");
const SCRIPT = path.join(ROOT, "scripts", "postgres.mjs");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: ROOT, timeout: 90000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const npmRun = (script: string, ...args: string[]): Promise<Run> =>
  run("npm", ["run", "-s", script, "--", ...args]);

/** Runs `fn(module)` in a plain node process that imports scripts/postgres.mjs; resolves to its stdout. */
async function withScriptModule(body: string): Promise<string> {
  const code = `import(${JSON.stringify(SCRIPT)}).then(async (m) => { ${body} }).then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });`;
  const r = await run(process.execPath, ["-e", code]);
  if (r.code !== 0) throw new Error(`node -e failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

function lastLine(text: string): string {
  const lines = text.trimEnd().split("\n");
  return lines[lines.length - 1] ?? "";
}

async function query<T>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end();
  }
}

async function refused(url: string): Promise<boolean> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.end();
    return false;
  } catch {
    return true;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return true;
  }
}

async function eventually(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return check();
}

/** A temp directory the unprivileged server user can reach (mkdtemp makes 0700; PostgreSQL runs as nobody under root). */
function reachableTempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
});

describe("npm run postgres:start / postgres:stop", () => {
  let base: string;
  let dir: string;

  beforeAll(() => {
    base = reachableTempDir("toolgate-pg-infra-");
    dir = path.join(base, "pg");
    cleanups.push(async () => {
      await npmRun("postgres:stop", dir);
      fs.rmSync(base, { recursive: true, force: true });
    });
  });

  test("--help describes both commands and exits 0", async () => {
    const start = await npmRun("postgres:start", "--help");
    expect(start.code).toBe(0);
    expect(start.stdout).toContain("usage: npm run -s postgres:start -- <dir>");
    expect(start.stdout).toContain("last line of stdout");
    const stop = await npmRun("postgres:stop", "--help");
    expect(stop.code).toBe(0);
    expect(stop.stdout).toContain("usage: npm run -s postgres:stop -- <dir>");
  });

  test("usage errors exit 2", async () => {
    for (const args of [[], ["--bogus", dir], [dir, "other"], [dir, "--owner-pid", "x"]]) {
      const r = await npmRun("postgres:start", ...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("usage:");
    }
    expect(fs.existsSync(dir)).toBe(false);
  });

  test("start prints a URL that connects; again prints the same URL; stop stops; start again keeps the data", async () => {
    // if this jest run is killed, the watchdog stops the server and removes its data
    const owner = ["--owner-pid", String(process.pid), "--remove-on-owner-exit"];
    const first = await npmRun("postgres:start", dir, ...owner);
    expect(first.stderr).not.toMatch(/failed/);
    expect(first.code).toBe(0);
    const url = lastLine(first.stdout);
    expect(url).toMatch(/^postgres:\/\/postgres:[0-9a-f]+@127\.0\.0\.1:\d+\/toolgate$/);

    const [row] = await query<{ version: string; db: string; addr: string | null }>(
      url,
      "select version() as version, current_database() as db, inet_server_addr()::text as addr",
    );
    expect(row?.version).toMatch(/^PostgreSQL \d+/);
    expect(row?.db).toBe("toolgate");
    expect(row?.addr).toBe("127.0.0.1/32");
    await query(url, "create table kept (v int); insert into kept values (42)");

    // a wrong password is refused: the server is not open to anyone on loopback
    const wrong = new URL(url);
    wrong.password = "wrong";
    await expect(query(wrong.toString(), "select 1")).rejects.toThrow(/password/);

    const again = await npmRun("postgres:start", dir);
    expect(again.code).toBe(0);
    expect(lastLine(again.stdout)).toBe(url);

    const pid = Number(
      fs.readFileSync(path.join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0],
    );
    expect(pidAlive(pid)).toBe(true);
    const stop = await npmRun("postgres:stop", dir);
    expect(stop.code).toBe(0);
    expect(pidAlive(pid)).toBe(false);
    expect(fs.existsSync(path.join(dir, "data", "postmaster.pid"))).toBe(false);
    expect(await refused(url)).toBe(true);

    const stopAgain = await npmRun("postgres:stop", dir);
    expect(stopAgain.code).toBe(0);

    const restarted = await npmRun("postgres:start", dir, ...owner);
    expect(restarted.code).toBe(0);
    const url2 = lastLine(restarted.stdout);
    expect(await query<{ v: number }>(url2, "select v from kept")).toEqual([{ v: 42 }]);
    expect((await npmRun("postgres:stop", dir)).code).toBe(0);
  }, 90000);
});

describe("the jest run's server and freshDatabase()", () => {
  test("TOOLGATE_TEST_POSTGRES_URL is the superuser URL of a running server", async () => {
    expect(postgresAdminUrl()).toBe(process.env.TOOLGATE_TEST_POSTGRES_URL);
    const [row] = await query<{ su: boolean }>(
      postgresAdminUrl(),
      "select rolsuper as su from pg_roles where rolname = current_user",
    );
    expect(row?.su).toBe(true);
  });

  test("fresh databases are distinct and isolated, and drop removes them", async () => {
    const [a, b] = await Promise.all([freshDatabase(), freshDatabase()]);
    if (!a || !b) throw new Error("unreachable");
    cleanups.push(
      () => a.drop(),
      () => b.drop(),
    );
    expect(a.name).not.toBe(b.name);
    expect(a.url).not.toBe(b.url);
    expect(new URL(a.url).pathname).toBe(`/${a.name}`);

    await query(a.url, "create table t (v text); insert into t values ('a')");
    await expect(query(b.url, "select * from t")).rejects.toThrow(/does not exist/);
    await query(b.url, "create table t (v text); insert into t values ('b')");
    expect(await query(a.url, "select v from t")).toEqual([{ v: "a" }]);
    expect(await query(b.url, "select v from t")).toEqual([{ v: "b" }]);

    // drop ends open sessions first
    const open = new Client({ connectionString: a.url });
    await open.connect();
    open.on("error", () => undefined);
    await a.drop();
    await a.drop();
    await open.end().catch(() => undefined);
    const names = await query<{ datname: string }>(
      postgresAdminUrl(),
      "select datname from pg_database",
    );
    expect(names.map((r) => r.datname)).not.toContain(a.name);
    expect(names.map((r) => r.datname)).toContain(b.name);
  });

  test("many fresh databases at once", async () => {
    const dbs = await Promise.all(Array.from({ length: 6 }, () => freshDatabase()));
    expect(new Set(dbs.map((d) => d.name)).size).toBe(6);
    await Promise.all(dbs.map((d) => d.drop()));
  });
});

describe("servers whose owner died", () => {
  test("the watchdog stops the server and removes its directory when the owner process dies", async () => {
    const dir = reachableTempDir("toolgate-pg-watchdog-");
    cleanups.push(async () => {
      await withScriptModule(`await m.destroyServer(${JSON.stringify(dir)});`);
    });
    const owner = spawn("sleep", ["120"], { stdio: "ignore" });
    const ownerPid = owner.pid ?? 0;
    cleanups.push(async () => {
      owner.kill("SIGKILL");
      return Promise.resolve();
    });
    const started = await npmRun(
      "postgres:start",
      "--fast",
      dir,
      "--owner-pid",
      String(ownerPid),
      "--remove-on-owner-exit",
    );
    expect(started.code).toBe(0);
    const url = lastLine(started.stdout);
    await query(url, "select 1");
    const pid = Number(
      fs.readFileSync(path.join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0],
    );

    owner.kill("SIGKILL");
    expect(await eventually(() => !pidAlive(pid) && !fs.existsSync(dir), 15000)).toBe(true);
    expect(await refused(url)).toBe(true);
  }, 60000);

  test("cleanStale removes a dead run's directory and stops its server (no watchdog left)", async () => {
    const prefix = `toolgate-pg-stale-${process.pid}-`;
    const dir = reachableTempDir(prefix);
    const live = reachableTempDir(prefix);
    cleanups.push(async () => {
      await withScriptModule(
        `await m.destroyServer(${JSON.stringify(dir)}); await m.destroyServer(${JSON.stringify(live)});`,
      );
    });
    // an owner that is gone: a finished child's pid
    const dead = spawn("true");
    await new Promise((resolve) => dead.on("exit", resolve));
    fs.writeFileSync(path.join(dir, "owner.pid"), `${dead.pid}\n`);
    fs.writeFileSync(path.join(live, "owner.pid"), `${process.pid}\n`);
    const url = lastLine(
      await withScriptModule(
        `process.stdout.write(await m.startServer(${JSON.stringify(dir)}, { fast: true, quiet: true }));`,
      ),
    );
    const pid = Number(
      fs.readFileSync(path.join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0],
    );

    await withScriptModule(`await m.cleanStale(${JSON.stringify(prefix)});`);
    expect(pidAlive(pid)).toBe(false);
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(live)).toBe(true); // its owner (this process) is alive
    expect(await refused(url)).toBe(true);
  }, 60000);
});
