// jest globalSetup: one throwaway PostgreSQL server per jest run (scripts/postgres.mjs), its superuser URL in
// TOOLGATE_TEST_POSTGRES_URL for the workers (test/helpers/postgres.ts). Cold start is about 1 s, so it starts
// always instead of lazily.
//
// - TOOLGATE_TEST_POSTGRES_URL already set: that server is used, nothing is started.
// - TOOLGATE_TEST_POSTGRES=0: nothing is started (quick runs of tests that do not need PostgreSQL).
// - The server's directory is <tmp>/toolgate-jest-pg-XXXX (<tmp>: see baseDir) with owner.pid = this jest process; a detached
//   watchdog stops the server and removes the directory if jest dies without its globalTeardown (SIGKILL).
// - Leftovers of killed runs whose watchdog died too are removed here (cleanStale).
// - If no server can be started (no binaries for this platform …) the run goes on: the reason is in
//   TOOLGATE_TEST_POSTGRES_ERROR and tests that need PostgreSQL fail with it.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { cleanStale, destroyServer, startServer } from "../../scripts/postgres.mjs";

export const PREFIX = "toolgate-jest-pg-";

/**
 * Where the run's server keeps its data: $TOOLGATE_TEST_POSTGRES_TMP, else /dev/shm when it is a tmpfs with room
 * (no disk I/O: cluster creation is I/O bound on a busy machine), else the temp dir.
 */
function baseDir() {
  if (process.env.TOOLGATE_TEST_POSTGRES_TMP) return process.env.TOOLGATE_TEST_POSTGRES_TMP;
  if (process.platform === "linux") {
    try {
      const st = fs.statfsSync("/dev/shm");
      const TMPFS_MAGIC = 0x01021994;
      if (st.type === TMPFS_MAGIC && st.bavail * st.bsize >= 2 * 1024 ** 3) {
        fs.accessSync("/dev/shm", fs.constants.W_OK);
        return "/dev/shm";
      }
    } catch {
      // no usable /dev/shm
    }
  }
  return os.tmpdir();
}

export default async function globalSetup() {
  if (process.env.TOOLGATE_TEST_POSTGRES_URL) return;
  if (process.env.TOOLGATE_TEST_POSTGRES === "0") {
    process.env.TOOLGATE_TEST_POSTGRES_ERROR = "not started: TOOLGATE_TEST_POSTGRES=0";
    return;
  }
  const base = baseDir();
  for (const tmp of new Set([base, os.tmpdir()])) await cleanStale(PREFIX, tmp);
  const dir = fs.mkdtempSync(path.join(base, PREFIX));
  fs.chmodSync(dir, 0o755); // reachable by the unprivileged server user when jest runs as root
  fs.writeFileSync(path.join(dir, "owner.pid"), `${process.pid}\n`);
  globalThis.__TOOLGATE_TEST_POSTGRES_DIR = dir;
  try {
    const url = await startServer(dir, {
      fast: true,
      quiet: true,
      ownerPid: process.pid,
      removeOnOwnerExit: true,
    });
    process.env.TOOLGATE_TEST_POSTGRES_URL = url;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    process.env.TOOLGATE_TEST_POSTGRES_ERROR = message;
    process.stderr.write(
      `\nPostgreSQL test server not started (tests that need it will fail): ${message}\n`,
    );
    await destroyServer(dir);
    globalThis.__TOOLGATE_TEST_POSTGRES_DIR = undefined;
  }
}
