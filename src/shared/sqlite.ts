import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  existsSync,
  openSync,
  readSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";
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
 * (`Checkpointer` below), started once the decision-path writes a
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
  /** Runs the WAL checkpoints off the event loop (see `Checkpointer` below). */
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

// ---------------------------------------------------------------------------
/**
 * WAL checkpoints off the event loop.
 *
 * In WAL mode every commit appends pages to `<db>-wal`; a checkpoint copies
 * them into the database file and fsyncs it (after an fsync of the WAL), so
 * that the WAL can start over. SQLite's auto-checkpoint does this inside the
 * commit that takes the WAL past 1000 pages, on the committing thread: with
 * node:sqlite that is the event loop, and on the decision path (an evaluation
 * per needs_approval, a reservation per budgeted allow) every in-flight
 * decision then waited ~5-18 ms, once every few hundred writes (~250
 * evaluations).
 *
 * A `Checkpointer` moves that to a worker thread with its own connection,
 * one thread for every store of the process (a Node worker costs ~16 MB of
 * RSS, most of which stays after it exits):
 * - The store's connections keep SQLite's auto-checkpoint, raised to
 *   `HARD_CAP_FRAMES` (4x the default): the safety net. Should the worker
 *   not run (not started, failed, gone) or fall behind, the committing
 *   connection checkpoints itself as before, so the WAL stays bounded.
 * - Every `CHECK_EVERY` decision-path writes (`noteWrite()`) the store reads
 *   the WAL's size from the wal-index header in `<db>-shm` (mxFrame and
 *   nBackfill, https://www.sqlite.org/walformat.html; one 104-byte pread, no
 *   lock: a torn read only misjudges when to wake the worker). When at least
 *   `CHECKPOINT_FRAMES` pages wait, it wakes the worker (an Atomics.notify),
 *   starting it first if it is not running: at idle there is no worker.
 * - The worker runs `PRAGMA wal_checkpoint(PASSIVE)` (it never waits for
 *   or blocks a writer or reader) on a `synchronous=FULL` connection, so
 *   SQLite keeps its own fsync ordering (WAL synced before the copy, the
 *   database synced after), then again while frames written meanwhile are
 *   left, pausing briefly when only a few are, until the WAL has started
 *   over (the first commit after a checkpoint that copied every frame
 *   restarts it; under a steady stream of commits that takes a few tries,
 *   and while the WAL has not, the store wakes the worker again from
 *   2 x `CHECKPOINT_FRAMES` on). It exits after `IDLE_EXIT_MS` without work.
 * - Durability is SQLite's: a checkpoint never loses a commit, whichever
 *   connection runs it. A store's `close()` has the worker close its
 *   connection to that database and waits (blocking, at most one
 *   checkpoint), so the store's own last close still checkpoints and removes
 *   the WAL as before; the last store's close stops the worker.
 *
 * The worker is a few lines of plain JavaScript evaluated in the thread (no
 * file to find in dist/ or src/); it reads nothing from outside but the path.
 * (Here rather than in a module of its own: the store tests transpile
 * exactly the modules the store needs into a worker's tree.)
 */

/** Pages in the WAL that wake the worker: SQLite's default auto-checkpoint. */
export const CHECKPOINT_FRAMES = 1000;
/** The connections' own auto-checkpoint (the safety net). */
export const HARD_CAP_FRAMES = 4 * CHECKPOINT_FRAMES;
/** Decision-path writes between two reads of the WAL's size. */
export const CHECK_EVERY = 32;
/** A worker without work for this long closes its connection and exits. */
export const IDLE_EXIT_MS = 30_000;

/** Checkpoints per wake-up and database at most, and the pause before one that would copy only a few frames. */
const CATCH_UP_RUNS = 32;
const CATCH_UP_PAUSE_MS = 10;

// Int32 slots of the shared control block
const KICK = 0; // incremented by the main thread to wake the worker
const STOP = 1; // 1: the worker must close everything and exit
const STATE = 2; // NEW (not begun), OPEN (may hold connections), DONE
const RUNS = 3; // checkpoints the worker has run
const RESTARTS = 4; // times the worker saw a WAL started over after its checkpoints
const FAILED = 5; // 1: the worker failed (it is not restarted)
const SLOTS = 6;
const NEW = 0;
const OPEN = 1;
const DONE = 2;

// One worker for every store of the process (a thread costs ~16 MB of RSS).
// Messages, read with receiveMessageOnPort after each wake-up:
// { kick: id, path } checkpoint that database (opening a connection to it);
// { close: id, done } close that connection, then set done[0] = 1.
const WORKER_SOURCE = `
"use strict";
const { workerData, receiveMessageOnPort } = require("node:worker_threads");
const { DatabaseSync } = require("node:sqlite");
const c = new Int32Array(workerData.control);
const port = workerData.port;
const [KICK, STOP, STATE, RUNS, RESTARTS, FAILED, NEW, OPEN, DONE] = workerData.slots;
const dbs = new Map();
const acks = [];
function connection(id, path) {
  let d = dbs.get(id);
  if (d !== undefined) return d;
  const db = new DatabaseSync(path, { timeout: workerData.busyTimeoutMs });
  try {
    db.exec("PRAGMA synchronous = FULL");
    d = { db, ckpt: db.prepare("PRAGMA wal_checkpoint(PASSIVE)") };
  } catch (e) {
    db.close();
    throw e;
  }
  dbs.set(id, d);
  return d;
}
function release(id) {
  const d = dbs.get(id);
  dbs.delete(id);
  if (d !== undefined) d.db.close();
}
function ack(done) {
  const a = new Int32Array(done);
  Atomics.store(a, 0, 1);
  Atomics.notify(a, 0);
}
// Copy, then copy what was committed meanwhile, until the WAL has started
// over (the first commit after a checkpoint that copied every frame restarts
// it): its frame count then drops.
function catchUp(d) {
  let last = -1;
  for (let i = 0; i < workerData.catchUp && Atomics.load(c, STOP) === 0; i++) {
    const r = d.ckpt.get();
    Atomics.add(c, RUNS, 1);
    if (r.log < last || r.log === 0) {
      Atomics.add(c, RESTARTS, 1);
      return;
    }
    last = r.log;
    if (r.busy !== 0 || r.log - r.checkpointed < 64) Atomics.wait(c, STOP, 0, workerData.pauseMs);
  }
}
try {
  if (Atomics.compareExchange(c, STATE, NEW, OPEN) === NEW) {
    let seen = Atomics.load(c, KICK) - 1;
    while (Atomics.load(c, STOP) === 0) {
      if (Atomics.load(c, KICK) === seen && Atomics.wait(c, KICK, seen, workerData.idleMs) === "timed-out") break;
      seen = Atomics.load(c, KICK);
      const due = new Map();
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        const msg = m.message;
        if (msg.close !== undefined) {
          due.delete(msg.close);
          try { release(msg.close); } finally { ack(msg.done); }
        } else due.set(msg.kick, msg.path);
      }
      for (const [id, path] of due) {
        if (Atomics.load(c, STOP) !== 0) break;
        catchUp(connection(id, path));
      }
    }
  }
} catch (e) {
  Atomics.store(c, FAILED, 1);
} finally {
  for (const id of [...dbs.keys()]) {
    try { release(id); } catch { Atomics.store(c, FAILED, 1); }
  }
  Atomics.store(c, STATE, DONE);
  Atomics.notify(c, STATE);
  // whoever waits for a connection to close: none is open any more
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port))
    if (m.message.close !== undefined) ack(m.message.done);
}
`;

/** The WAL's size from the wal-index header: pages written, pages already checkpointed. */
export interface WalFrames {
  mxFrame: number;
  nBackfill: number;
}

/** Reads the wal-index header (walformat.html, 2.2); undefined when it is not a known one. */
export function readWalFrames(shmFd: number, buf: Buffer): WalFrames | undefined {
  if (readSync(shmFd, buf, 0, 104, 0) < 104) return undefined;
  const u = new Uint32Array(buf.buffer, buf.byteOffset, 26); // native byte order, as SQLite writes it
  if (u[0] !== 3007000 || u[12] !== 3007000) return undefined; // iVersion of both header copies
  return { mxFrame: u[4] ?? 0, nBackfill: u[24] ?? 0 };
}

export interface CheckpointerOptions {
  /** The database file (`<path>-wal`, `<path>-shm` beside it). */
  path: string;
  busyTimeoutMs: number;
}

/** The process's checkpoint worker, shared by every store (started when one is due). */
class CheckpointWorker {
  private readonly control = new SharedArrayBuffer(SLOTS * 4);
  readonly c = new Int32Array(this.control);
  private worker: Worker | undefined;
  private port: MessagePort | undefined;
  /** Workers started (for tests and metrics). */
  started = 0;
  failed = false;
  /** Checkpointers that have woken the worker and are not closed. */
  private readonly users = new Set<number>();

  constructor() {
    this.c[STATE] = DONE; // no worker yet
  }

  running(): boolean {
    return this.worker !== undefined && Atomics.load(this.c, STATE) !== DONE;
  }

  kick(id: number, path: string, busyTimeoutMs: number): void {
    if (this.failed || Atomics.load(this.c, FAILED) !== 0) {
      this.failed = true;
      return;
    }
    if (Atomics.load(this.c, STATE) === DONE) this.start(busyTimeoutMs);
    this.users.add(id);
    this.port?.postMessage({ kick: id, path });
    this.wake();
  }

  /**
   * Has the worker close its connection to `id`'s database and waits for it
   * (at most one checkpoint; 5 s at worst); the last user stops the worker.
   */
  release(id: number): void {
    if (!this.users.delete(id)) return;
    if (Atomics.load(this.c, STATE) === DONE || this.port === undefined) return;
    const done = new SharedArrayBuffer(4);
    const flag = new Int32Array(done);
    this.port.postMessage({ close: id, done });
    this.wake();
    const end = Date.now() + 5000;
    while (Atomics.load(flag, 0) === 0 && Atomics.load(this.c, STATE) !== DONE) {
      if (Date.now() > end) break;
      Atomics.wait(flag, 0, 0, 50);
    }
    if (this.users.size === 0) this.stop();
  }

  private wake(): void {
    Atomics.add(this.c, KICK, 1);
    Atomics.notify(this.c, KICK);
  }

  /** Stops the worker (it closes its connections); the next kick starts another. */
  private stop(): void {
    Atomics.store(this.c, STOP, 1);
    Atomics.notify(this.c, STOP); // a catch-up pause
    this.wake();
    // a worker that has not begun never will; one that has is waited for
    if (Atomics.compareExchange(this.c, STATE, NEW, DONE) === OPEN)
      Atomics.wait(this.c, STATE, OPEN, 5000);
    this.detach();
  }

  private detach(): void {
    const w = this.worker;
    this.worker = undefined;
    this.port?.close();
    this.port = undefined;
    if (w !== undefined) void w.terminate().catch(() => undefined);
  }

  private start(busyTimeoutMs: number): void {
    this.detach(); // an idle worker that exited (or is exiting)
    Atomics.store(this.c, STOP, 0);
    Atomics.store(this.c, STATE, NEW);
    try {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: {
          control: this.control,
          port: port2,
          slots: [KICK, STOP, STATE, RUNS, RESTARTS, FAILED, NEW, OPEN, DONE],
          busyTimeoutMs: Math.trunc(busyTimeoutMs),
          idleMs: IDLE_EXIT_MS,
          catchUp: CATCH_UP_RUNS,
          pauseMs: CATCH_UP_PAUSE_MS,
        },
        transferList: [port2],
        resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2, stackSizeMb: 1 },
        stdout: true,
        stderr: true,
        env: {},
      });
      w.on("error", () => {
        // a worker that died without its finally (out of memory, a bug): no more workers
        this.failed = true;
        Atomics.store(this.c, FAILED, 1);
      });
      w.on("exit", () => {
        // the thread is gone, and its connections with it (an older worker's exit is not news)
        if (this.worker !== w) return;
        Atomics.store(this.c, STATE, DONE);
        this.detach();
      });
      w.unref();
      this.worker = w;
      this.port = port1;
      this.started++;
    } catch {
      this.failed = true;
      Atomics.store(this.c, STATE, DONE);
    }
  }
}

let sharedWorker: CheckpointWorker | undefined;
let nextId = 0;

/** The process's checkpoint worker (created on first use; for tests and metrics). */
export function checkpointWorker(): {
  started: number;
  running: boolean;
  runs: number;
  restarts: number;
  failed: boolean;
} {
  sharedWorker ??= new CheckpointWorker();
  const w = sharedWorker;
  return {
    started: w.started,
    running: w.running(),
    runs: Atomics.load(w.c, RUNS),
    restarts: Atomics.load(w.c, RESTARTS),
    failed: w.failed || Atomics.load(w.c, FAILED) !== 0,
  };
}

/** The worker's thread, if one runs (for tests: to kill it). */
export function checkpointWorkerThread(): Worker | undefined {
  return (sharedWorker as unknown as { worker: Worker | undefined } | undefined)?.worker;
}

/** One store's use of the checkpoint worker: when to wake it for this database. */
export class Checkpointer {
  private readonly id = ++nextId;
  private shmFd: number | undefined;
  private readonly buf = Buffer.alloc(104);
  private writes = 0;
  private closed = false;
  /** Whether this store has woken the worker. */
  kicked = false;

  constructor(private readonly opts: CheckpointerOptions) {}

  /** A decision-path write was committed: now and then, see whether a checkpoint is due. */
  noteWrite(): void {
    if (++this.writes % CHECK_EVERY !== 0 || this.closed) return;
    let due: boolean;
    try {
      this.shmFd ??= openSync(`${this.opts.path}-shm`, constants.O_RDONLY);
      const f = readWalFrames(this.shmFd, this.buf);
      // a checkpoint's worth to copy, or copied but not yet started over
      due =
        f === undefined ||
        f.mxFrame - f.nBackfill >= CHECKPOINT_FRAMES ||
        f.mxFrame >= 2 * CHECKPOINT_FRAMES;
    } catch {
      due = true; // cannot tell: let the worker look (the safety net bounds the WAL anyway)
    }
    if (due) this.kick();
  }

  /** Wakes the worker for this database, starting it when none runs. */
  kick(): void {
    if (this.closed) return;
    sharedWorker ??= new CheckpointWorker();
    this.kicked = true;
    sharedWorker.kick(this.id, this.opts.path, this.opts.busyTimeoutMs);
  }

  /**
   * Has the worker close its connection to this database, waiting for a
   * running checkpoint (the last store's close stops the worker); idempotent.
   * After this the store's close of its own connections is the last one,
   * which checkpoints the WAL and removes it.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    sharedWorker?.release(this.id);
    if (this.shmFd !== undefined) {
      try {
        closeSync(this.shmFd);
      } catch {
        // nothing to do
      }
      this.shmFd = undefined;
    }
  }
}
