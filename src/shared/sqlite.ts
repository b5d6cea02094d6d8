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
import { Checkpointer, HARD_CAP_FRAMES } from "./checkpointer";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "./paths";

// WAL checkpoints off the event loop live in ./checkpointer (the worker's code
// in ./checkpoint-worker); the stores and their tests use them from here.
export {
  CHECK_EVERY,
  CHECKPOINT_FRAMES,
  Checkpointer,
  checkpointWorker,
  checkpointWorkerFile,
  checkpointWorkerThread,
  HARD_CAP_FRAMES,
  IDLE_EXIT_MS,
  readWalFrames,
  type CheckpointerOptions,
  type WalFrames,
} from "./checkpointer";

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

/** What a store is built from: its file, the FULL connection and the second one. */
export interface OpenedStore {
  path: string;
  /** synchronous=FULL: every write fsynced. */
  db: DatabaseSync;
  /** synchronous=NORMAL (writes whose loss is harmless), or `db` itself. */
  normal: DatabaseSync;
  /** The connections' busy timeout (the checkpointer's connection uses it too). */
  busyTimeoutMs?: number;
}

export interface StoreSpec {
  dir: string;
  file: string;
  /** The coded error of this store's failures (a 503). */
  code: ErrorCode;
  /** "approval store", "containment store": how messages name it. */
  label: string;
  busyTimeoutMs: number;
  migrations: readonly Migration[];
  /** Open a second, synchronous=NORMAL connection (else `normal` is `db`). */
  normal: boolean;
}

/**
 * A store on one SQLite file: opened and migrated once (`SqliteStore.open`),
 * every access through `run` (a closed store, or any SQLite failure, is the
 * store's coded error), `problem()` for health checks, `close()` for both
 * connections (the NORMAL one first: the FULL one checkpoints the WAL last).
 *
 * WAL checkpoints: the connections auto-checkpoint only past
 * `HARD_CAP_FRAMES` (the safety net); before that a worker thread does it
 * (`Checkpointer`, src/shared/checkpointer.ts), started once the decision-path writes a
 * subclass reports with `wrote()` have grown the WAL to a checkpoint's worth.
 */
export abstract class SqliteStore {
  readonly path: string;
  protected readonly db: DatabaseSync;
  protected readonly normal: DatabaseSync;
  protected closed = false;
  /** The file opened at `path` (to notice it removed or replaced). */
  private readonly opened: FileIdentity;
  private readonly guard: <T>(what: string, fn: () => T) => T;
  /** Runs the WAL checkpoints off the event loop (see `Checkpointer`, src/shared/checkpointer.ts). */
  protected readonly checkpointer: Checkpointer;

  protected constructor(
    o: OpenedStore,
    private readonly code: ErrorCode,
    private readonly label: string,
  ) {
    this.path = o.path;
    this.db = o.db;
    this.normal = o.normal;
    this.opened = fileIdentity(o.path);
    this.guard = storeGuard(code, label);
    this.checkpointer = new Checkpointer({ path: o.path, busyTimeoutMs: o.busyTimeoutMs ?? 5000 });
  }

  /** Opens `<dir>/<file>` (creating and migrating it as needed) with the connections `spec` asks for. */
  protected static openFiles(spec: StoreSpec): OpenedStore {
    const guard = storeGuard(spec.code, spec.label);
    return guard(`open ${join(spec.dir, spec.file)}`, () => {
      const { path, db } = openDatabase({
        dir: spec.dir,
        file: spec.file,
        busyTimeoutMs: spec.busyTimeoutMs,
        migrations: spec.migrations,
        tooNew: (v, known) =>
          toolgateError(
            spec.code,
            `${spec.file} has schema version ${v}; this toolgate knows up to ${known}`,
          ),
      });
      const busyTimeoutMs = spec.busyTimeoutMs;
      // the checkpointer's worker checkpoints before that; this is the safety net
      const cap = `PRAGMA wal_autocheckpoint = ${HARD_CAP_FRAMES}`;
      try {
        db.exec(cap);
        if (!spec.normal) return { path, db, normal: db, busyTimeoutMs };
      } catch (e) {
        db.close();
        throw e;
      }
      try {
        const normal = openConnection({ path, busyTimeoutMs, synchronous: "NORMAL" });
        try {
          normal.exec(cap);
        } catch (e) {
          normal.close();
          throw e;
        }
        return { path, db, normal, busyTimeoutMs };
      } catch (e) {
        db.close();
        throw e;
      }
    });
  }

  /** The applied schema version (the highest row of schema_migrations). */
  schemaVersion(): number {
    return this.run("read schema version", () => currentVersion(this.db));
  }

  /** Why the store cannot serve now (see databaseProblem), or undefined. */
  problem(): string | undefined {
    if (this.closed) return `${this.label} is closed`;
    return databaseProblem(this.db, this.path, this.opened);
  }

  /**
   * Closes the connections (the checkpointer's first, waiting for a running
   * checkpoint; then the NORMAL one: the FULL one checkpoints the WAL last).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.checkpointer.close();
    try {
      if (this.normal !== this.db) this.normal.close();
    } finally {
      this.db.close();
    }
  }

  /** A decision-path write was committed: lets the checkpointer see whether a checkpoint is due. */
  protected wrote(): void {
    this.checkpointer.noteWrite();
  }

  /** Runs `fn` on an open store; SQLite failures become the store's coded error. */
  protected run<T>(what: string, fn: () => T): T {
    if (this.closed) throw toolgateError(this.code, `${this.label} is closed`);
    return this.guard(what, fn);
  }
}
