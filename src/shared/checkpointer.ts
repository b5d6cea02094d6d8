import { closeSync, constants, existsSync, openSync, readSync } from "node:fs";
import { join } from "node:path";
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";
import { packageRoot } from "./paths";

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
 * The worker's code is src/shared/checkpoint-worker.ts, started from its
 * built file (`checkpointWorkerFile()`); it reads nothing from outside but
 * its settings and the databases' paths. Without that file (a tree built
 * without it) no worker starts: `checkpointWorker().failed` says so and the
 * safety net keeps the WAL bounded.
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

// One worker for every store of the process (a thread costs ~16 MB of RSS),
// running src/shared/checkpoint-worker.ts. Messages, read with
// receiveMessageOnPort after each wake-up:
// { kick: id, path } checkpoint that database (opening a connection to it);
// { close: id, done } close that connection, then set done[0] = 1.

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

/**
 * The worker's built file: next to this module when running from dist/, else
 * `<packageRoot>/dist/src/shared/checkpoint-worker.js` (running from src/
 * under ts-jest: the tests build dist/ first); undefined when neither exists.
 */
export function checkpointWorkerFile(): string | undefined {
  const here = join(__dirname, "checkpoint-worker.js");
  if (existsSync(here)) return here;
  try {
    const built = join(packageRoot(), "dist", "src", "shared", "checkpoint-worker.js");
    return existsSync(built) ? built : undefined;
  } catch {
    return undefined; // no package root above this module
  }
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
    const file = checkpointWorkerFile();
    if (file === undefined) {
      // not built: no worker in this process (the safety net bounds the WAL)
      this.failed = true;
      return;
    }
    Atomics.store(this.c, STOP, 0);
    Atomics.store(this.c, STATE, NEW);
    try {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(file, {
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
