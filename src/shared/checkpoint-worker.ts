/**
 * The WAL checkpoint worker: the thread's code, started by `CheckpointWorker`
 * (src/shared/checkpointer.ts, which describes the design) from this module's
 * built file. It imports nothing but node: built-ins and reads nothing from
 * outside but its settings (`workerData`, checked here) and the paths of the
 * databases it is told to checkpoint.
 *
 * Protocol, over the shared control block (Int32 slots whose indices come in
 * `slots`) and a MessagePort read with receiveMessageOnPort after each
 * wake-up:
 * - KICK: incremented by the main thread to wake the worker;
 * - STOP: 1 when the worker must close everything and exit;
 * - STATE: NEW (not begun), OPEN (may hold connections), DONE; the worker
 *   moves it NEW -> OPEN when it begins (a main thread that stopped it before
 *   has moved it to DONE: it then never begins) and to DONE when it ends;
 * - RUNS, RESTARTS: checkpoints run, WALs seen started over after them;
 * - FAILED: 1 when the worker failed (it is not restarted);
 * - messages `{ kick: id, path }` (checkpoint that database, opening a
 *   connection to it) and `{ close: id, done }` (close that connection, then
 *   set done[0] = 1 and notify).
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { isMainThread, MessagePort, receiveMessageOnPort, workerData } from "node:worker_threads";

/** Indices of the control block's slots and the values of STATE. */
interface Slots {
  KICK: number;
  STOP: number;
  STATE: number;
  RUNS: number;
  RESTARTS: number;
  FAILED: number;
  NEW: number;
  OPEN: number;
  DONE: number;
}

export interface CheckpointWorkerSettings {
  control: SharedArrayBuffer;
  port: MessagePort;
  /** [KICK, STOP, STATE, RUNS, RESTARTS, FAILED, NEW, OPEN, DONE] */
  slots: number[];
  busyTimeoutMs: number;
  /** Without work for this long the worker exits. */
  idleMs: number;
  /** Checkpoints per wake-up and database at most. */
  catchUp: number;
  /** The pause before a checkpoint that would copy only a few frames (or after a busy one). */
  pauseMs: number;
}

interface Settings {
  c: Int32Array;
  port: MessagePort;
  s: Slots;
  busyTimeoutMs: number;
  idleMs: number;
  catchUp: number;
  pauseMs: number;
}

type Message = { kick: number; path: string } | { close: number; done: SharedArrayBuffer };

interface Connection {
  db: DatabaseSync;
  ckpt: StatementSync;
}

function count(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)
    throw new TypeError(`checkpoint worker: ${what} is not a non-negative integer`);
  return v;
}

/** The settings from `workerData`, their shapes checked. */
export function settingsOf(data: unknown): Settings {
  if (typeof data !== "object" || data === null)
    throw new TypeError("checkpoint worker: no settings");
  const d = data as Record<string, unknown>;
  const control = d["control"];
  if (!(control instanceof SharedArrayBuffer))
    throw new TypeError("checkpoint worker: control is not a SharedArrayBuffer");
  const port = d["port"];
  if (!(port instanceof MessagePort)) throw new TypeError("checkpoint worker: port is not a port");
  const slots = d["slots"];
  if (!Array.isArray(slots) || slots.length !== 9)
    throw new TypeError("checkpoint worker: slots is not nine indices");
  const n = slots.map((v, i) => count(v, `slots[${i}]`));
  const c = new Int32Array(control);
  for (const i of n.slice(0, 6))
    if (i >= c.length)
      throw new TypeError("checkpoint worker: a slot is outside the control block");
  const [KICK, STOP, STATE, RUNS, RESTARTS, FAILED, NEW, OPEN, DONE] = n as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return {
    c,
    port,
    s: { KICK, STOP, STATE, RUNS, RESTARTS, FAILED, NEW, OPEN, DONE },
    busyTimeoutMs: count(d["busyTimeoutMs"], "busyTimeoutMs"),
    idleMs: count(d["idleMs"], "idleMs"),
    catchUp: count(d["catchUp"], "catchUp"),
    pauseMs: count(d["pauseMs"], "pauseMs"),
  };
}

/** A message from the main thread; undefined for anything else. */
function messageOf(m: unknown): Message | undefined {
  if (typeof m !== "object" || m === null) return undefined;
  const o = m as Record<string, unknown>;
  const close = o["close"];
  const done = o["done"];
  if (close !== undefined)
    return typeof close === "number" && done instanceof SharedArrayBuffer && done.byteLength >= 4
      ? { close, done }
      : undefined;
  const kick = o["kick"];
  const path = o["path"];
  return typeof kick === "number" && typeof path === "string" ? { kick, path } : undefined;
}

function num(r: Record<string, unknown> | undefined, key: string): number {
  const v = r?.[key];
  if (typeof v !== "number") throw new TypeError(`wal_checkpoint returned no ${key}`);
  return v;
}

function ack(done: SharedArrayBuffer): void {
  const a = new Int32Array(done);
  Atomics.store(a, 0, 1);
  Atomics.notify(a, 0);
}

/** Runs the worker until it is stopped, idle for `idleMs`, or failed. */
export function run(o: Settings): void {
  const { c, port, s } = o;
  const dbs = new Map<number, Connection>();

  function connection(id: number, path: string): Connection {
    const had = dbs.get(id);
    if (had !== undefined) return had;
    const db = new DatabaseSync(path, { timeout: o.busyTimeoutMs });
    let d: Connection;
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

  function release(id: number): void {
    const d = dbs.get(id);
    dbs.delete(id);
    if (d !== undefined) d.db.close();
  }

  // Copy, then copy what was committed meanwhile, until the WAL has started
  // over (the first commit after a checkpoint that copied every frame
  // restarts it): its frame count then drops.
  function catchUp(d: Connection): void {
    let last = -1;
    for (let i = 0; i < o.catchUp && Atomics.load(c, s.STOP) === 0; i++) {
      const r = d.ckpt.get() as Record<string, unknown> | undefined;
      const log = num(r, "log");
      const busy = num(r, "busy");
      const checkpointed = num(r, "checkpointed");
      Atomics.add(c, s.RUNS, 1);
      if (log < last || log === 0) {
        Atomics.add(c, s.RESTARTS, 1);
        return;
      }
      last = log;
      if (busy !== 0 || log - checkpointed < 64) Atomics.wait(c, s.STOP, 0, o.pauseMs);
    }
  }

  try {
    if (Atomics.compareExchange(c, s.STATE, s.NEW, s.OPEN) === s.NEW) {
      let seen = Atomics.load(c, s.KICK) - 1;
      while (Atomics.load(c, s.STOP) === 0) {
        if (
          Atomics.load(c, s.KICK) === seen &&
          Atomics.wait(c, s.KICK, seen, o.idleMs) === "timed-out"
        )
          break;
        seen = Atomics.load(c, s.KICK);
        const due = new Map<number, string>();
        for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
          const msg = messageOf(m.message);
          if (msg === undefined) continue;
          if ("close" in msg) {
            due.delete(msg.close);
            try {
              release(msg.close);
            } finally {
              ack(msg.done);
            }
          } else due.set(msg.kick, msg.path);
        }
        for (const [id, path] of due) {
          if (Atomics.load(c, s.STOP) !== 0) break;
          catchUp(connection(id, path));
        }
      }
    }
  } catch {
    Atomics.store(c, s.FAILED, 1);
  } finally {
    for (const id of [...dbs.keys()]) {
      try {
        release(id);
      } catch {
        Atomics.store(c, s.FAILED, 1);
      }
    }
    Atomics.store(c, s.STATE, s.DONE);
    Atomics.notify(c, s.STATE);
    // whoever waits for a connection to close: none is open any more
    for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
      const msg = messageOf(m.message);
      if (msg !== undefined && "close" in msg) ack(msg.done);
    }
  }
}

// Settings that are not what the main thread sends throw here: the worker's
// "error" event, which marks it failed.
if (!isMainThread) run(settingsOf(workerData));
