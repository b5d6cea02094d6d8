import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  existsSync,
  openSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { isToolgateError, toolgateError, type ErrorCode } from "../errors";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "./paths";

/** One schema change; released migrations are never edited, only appended. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

type Row = Record<string, unknown>;

/** The applied schema version (the highest row of schema_migrations). */
export function currentVersion(db: DatabaseSync): number {
  const row = db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as
    Row | undefined;
  return Number(row?.v ?? 0);
}

/**
 * Applies what is missing of `migrations`, each in its own BEGIN IMMEDIATE (so
 * two processes opening at once migrate once), mirrored in user_version. A
 * database newer than the code is refused: `tooNew` builds that error.
 */
function migrate(
  db: DatabaseSync,
  migrations: readonly Migration[],
  tooNew: (v: number, known: number) => Error,
): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  for (const m of migrations) {
    db.exec("BEGIN IMMEDIATE");
    try {
      const applied = db
        .prepare("SELECT 1 AS one FROM schema_migrations WHERE version = ?")
        .get(m.version);
      if (!applied) {
        db.exec(m.sql);
        db.prepare(
          "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        ).run(m.version, m.name, Date.now());
        db.exec(`PRAGMA user_version = ${m.version}`);
      }
      db.exec("COMMIT");
    } catch (e) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw e;
    }
  }
  const known = migrations.reduce((v, m) => Math.max(v, m.version), 0);
  const v = currentVersion(db);
  if (v > known) throw tooNew(v, known);
}

/** `PRAGMA synchronous` levels toolgate uses (both are safe from corruption in WAL mode). */
export type Synchronous = "FULL" | "NORMAL";

/**
 * Opens a connection to an existing file with toolgate's settings: WAL
 * (required: `synchronous=NORMAL` is only corruption-free in WAL mode),
 * `synchronous`, busy_timeout, foreign keys on. Closes it again on failure.
 */
function connect(path: string, busyTimeoutMs: number, synchronous: Synchronous): DatabaseSync {
  const timeout = Math.trunc(busyTimeoutMs);
  const db = new DatabaseSync(path, { enableForeignKeyConstraints: true, timeout });
  try {
    db.exec(`PRAGMA busy_timeout = ${timeout}`);
    const mode = db.prepare("PRAGMA journal_mode = WAL").get() as Row | undefined;
    if (mode?.journal_mode !== "wal") throw new Error("cannot switch to WAL journal mode");
    db.exec(`PRAGMA synchronous = ${synchronous}`);
    db.exec("PRAGMA foreign_keys = ON");
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

/**
 * Opens (creating owner-only, 0600 in a 0700 directory) `<dir>/<file>` with
 * toolgate's settings — WAL, synchronous=FULL (an acknowledged write survives
 * power loss), busy_timeout so concurrent connections wait instead of
 * failing, foreign keys on — and migrates it.
 */
export function openDatabase(opts: {
  dir: string;
  file: string;
  busyTimeoutMs: number;
  migrations: readonly Migration[];
  tooNew: (version: number, known: number) => Error;
}): { path: string; db: DatabaseSync } {
  const path = join(opts.dir, opts.file);
  ensurePrivateDir(opts.dir);
  // Create the file owner-only before SQLite does (SQLite gives -wal/-shm the
  // same mode); tighten what an older version may have left 0644.
  closeSync(openSync(path, "a", PRIVATE_FILE_MODE));
  for (const f of [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    if (f === path || existsSync(f)) chmodSync(f, PRIVATE_FILE_MODE);
  }
  const db = connect(path, opts.busyTimeoutMs, "FULL");
  try {
    migrate(db, opts.migrations, opts.tooNew);
  } catch (e) {
    db.close();
    throw e;
  }
  return { path, db };
}

/**
 * One more connection to a file `openDatabase` has already created and
 * migrated (call it after that one: this does not migrate, and a file it had
 * to create would not be owner-only), with the same settings but the given
 * `synchronous`. `NORMAL` (in WAL mode) commits without fsync: such a
 * commit may be lost on power loss or an OS crash (never on a process crash),
 * but the file is never corrupted, and the next FULL commit on any connection
 * fsyncs the WAL — earlier NORMAL frames included — so a durable commit never
 * depends on a lost one. Use it only for writes whose loss is harmless.
 */
export function openConnection(opts: {
  path: string;
  busyTimeoutMs: number;
  synchronous: Synchronous;
}): DatabaseSync {
  return connect(opts.path, opts.busyTimeoutMs, opts.synchronous);
}

/** The connection's `PRAGMA synchronous`, by name. */
export function synchronousOf(db: DatabaseSync): string {
  const row = db.prepare("PRAGMA synchronous").get() as Row | undefined;
  const names = ["OFF", "NORMAL", "FULL", "EXTRA"];
  return names[Number(row?.synchronous)] ?? String(row?.synchronous);
}

/**
 * Wraps store calls so that any SQLite failure becomes one coded error (the
 * caller then fails closed); coded errors pass through.
 */
export function storeGuard(code: ErrorCode, label: string): <T>(what: string, fn: () => T) => T {
  return <T>(what: string, fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      if (isToolgateError(e)) throw e;
      const msg = e instanceof Error ? e.message : String(e);
      throw toolgateError(code, `${label}: ${what}: ${msg}`, { cause: e });
    }
  };
}

/** A file's device and inode: which file an open connection reads, whatever its name now. */
export interface FileIdentity {
  dev: number;
  ino: number;
}

export function fileIdentity(path: string): FileIdentity {
  const st = statSync(path);
  return { dev: st.dev, ino: st.ino };
}

/**
 * Why the database `db` opened at `path` (then the file `opened`) cannot
 * serve now, or undefined when it can: the file is gone or another took its
 * place (the open connection would go on with a file no restart finds), it
 * is not readable and writable (a read-only mount, its mode), or a read
 * fails. A stat, an access check and one small read: cheap enough for every
 * health check.
 */
export function databaseProblem(
  db: DatabaseSync,
  path: string,
  opened: FileIdentity,
): string | undefined {
  try {
    const now = fileIdentity(path);
    if (now.dev !== opened.dev || now.ino !== opened.ino)
      return `${path} is not the file toolgate opened (it was replaced)`;
    accessSync(path, constants.R_OK | constants.W_OK);
    db.prepare("SELECT COUNT(*) AS n FROM schema_migrations").get();
    return undefined;
  } catch (e) {
    const m = (e as { message?: unknown } | undefined)?.message; // fs errors may come from another realm
    const msg = typeof m === "string" ? m : String(e);
    return msg.includes(path) ? msg : `${path}: ${msg}`;
  }
}
