import { closeSync, existsSync, openSync, statSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { MessageChannel, Worker } from "node:worker_threads";
import { ApprovalStore, type EvaluationInput } from "../../src/approvals/store";
import { ContainmentStore } from "../../src/containment/store";
import {
  CHECKPOINT_FRAMES,
  checkpointWorker,
  checkpointWorkerFile,
  checkpointWorkerThread,
  HARD_CAP_FRAMES,
  readWalFrames,
  type Checkpointer,
  type WalFrames,
} from "../../src/shared/sqlite";
import { tempDir } from "../helpers/opa";
import { transpileSrc } from "../helpers/transpile";

/** The WAL's frame counts as SQLite's wal-index header has them. */
function walFrames(dbPath: string): WalFrames {
  const fd = openSync(`${dbPath}-shm`, "r");
  try {
    const f = readWalFrames(fd, Buffer.alloc(104));
    if (f === undefined) throw new Error("no wal-index header");
    return f;
  } finally {
    closeSync(fd);
  }
}

function checkpointerOf(store: ApprovalStore | ContainmentStore): Checkpointer {
  return (store as unknown as { checkpointer: Checkpointer }).checkpointer;
}

let n = 0;
function evaluation(): EvaluationInput {
  n++;
  return {
    evaluationId: `ev_${n}`,
    decisionId: `dec_${n}`,
    bindingHash: `hash_${n}`,
    bindingContextMembers: ["subject"],
    redactedRequest: { tool: "payments.refund", arguments: { note: "x".repeat(300), n } },
    requirement: { approvers: ["finance"] } as unknown as EvaluationInput["requirement"],
    initiator: "user:alice",
    agentId: "agent-1",
    tool: "payments.refund",
    createdAt: 1_000,
    expiresAt: 2_000_000_000_000,
  };
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("WAL checkpoints off the event loop (src/shared/checkpointer.ts, Checkpointer)", () => {
  test("the wal-index header read agrees with SQLite's own count of WAL frames", () => {
    const store = ApprovalStore.open(tempDir("toolgate-ckpt-"));
    for (let i = 0; i < 20; i++) store.addEvaluation(evaluation());
    const f = walFrames(store.path);
    const other = new DatabaseSync(store.path);
    const r = other.prepare("PRAGMA wal_checkpoint(PASSIVE)").get() as { log: number };
    other.close();
    expect(f.mxFrame).toBeGreaterThan(0);
    expect(r.log).toBe(f.mxFrame);
    store.close();
  });

  test("no worker at idle or for a few writes", () => {
    const started = checkpointWorker().started;
    const store = ApprovalStore.open(tempDir("toolgate-ckpt-"));
    for (let i = 0; i < 100; i++) store.addEvaluation(evaluation());
    expect(walFrames(store.path).mxFrame).toBeLessThan(CHECKPOINT_FRAMES);
    expect(checkpointerOf(store).kicked).toBe(false);
    expect(checkpointWorker().running).toBe(false);
    store.close();
    expect(checkpointWorker().started).toBe(started);
  });

  test("a worker checkpoints the WAL the evaluations grew, the main connection does not; close still removes the WAL", async () => {
    const dir = tempDir("toolgate-ckpt-");
    const store = ApprovalStore.open(dir);
    const dbSize = statSync(store.path).size;
    const { started, runs } = checkpointWorker();
    const ids: string[] = [];
    while (walFrames(store.path).mxFrame < CHECKPOINT_FRAMES + 200) {
      const e = evaluation();
      ids.push(e.evaluationId);
      store.addEvaluation(e);
    }
    expect(checkpointerOf(store).kicked).toBe(true);
    expect(checkpointWorker().started).toBe(started + 1);
    // nothing more is written: only the worker can copy the WAL (the store's
    // connections auto-checkpoint at HARD_CAP_FRAMES, far above this WAL)
    const grown = walFrames(store.path).mxFrame;
    expect(grown).toBeLessThan(HARD_CAP_FRAMES);
    await until("the worker's checkpoint", () => {
      const f = walFrames(store.path);
      return f.nBackfill === f.mxFrame;
    });
    expect(walFrames(store.path).mxFrame).toBe(grown);
    expect(checkpointWorker().runs).toBeGreaterThan(runs);
    expect(statSync(store.path).size).toBeGreaterThan(dbSize); // the rows are in the database file now
    // the WAL, copied entirely, starts over at the next commit
    store.addEvaluation(evaluation());
    expect(walFrames(store.path).mxFrame).toBeLessThan(20);
    expect(checkpointWorker().running).toBe(true);
    store.close(); // the last store: the worker stops
    expect(checkpointWorker().running).toBe(false);
    expect(existsSync(`${store.path}-wal`)).toBe(false); // the last close checkpointed as before
    const again = ApprovalStore.open(dir);
    for (const id of ids) expect(again.getEvaluation(id)?.evaluationId).toBe(id);
    again.close();
  });

  test("without the worker (stopped) the store checkpoints itself: the WAL stays bounded", () => {
    const store = ApprovalStore.open(tempDir("toolgate-ckpt-"));
    const started = checkpointWorker().started;
    checkpointerOf(store).close(); // no worker for this store, ever
    let max = 0;
    let restarts = 0;
    let last = 0;
    for (let i = 0; i < 5_000; i++) {
      store.addEvaluation(evaluation());
      const m = walFrames(store.path).mxFrame;
      if (m < last) restarts++;
      last = m;
      max = Math.max(max, m);
    }
    expect(checkpointWorker().started).toBe(started);
    expect(restarts).toBeGreaterThan(0);
    expect(max).toBeGreaterThanOrEqual(HARD_CAP_FRAMES); // it did wait for the cap...
    expect(max).toBeLessThan(HARD_CAP_FRAMES + 50); // ...and no further
    store.close();
  });

  test("a killed worker is replaced by the next one due", async () => {
    const store = ApprovalStore.open(tempDir("toolgate-ckpt-"));
    const started = checkpointWorker().started;
    while (checkpointWorker().started === started) store.addEvaluation(evaluation());
    await checkpointWorkerThread()?.terminate();
    await until("the exit to be seen", () => !checkpointWorker().running);
    while (walFrames(store.path).mxFrame < 2 * CHECKPOINT_FRAMES + 100)
      store.addEvaluation(evaluation());
    expect(checkpointWorker().started).toBe(started + 2);
    await until("the new worker's checkpoint", () => {
      const f = walFrames(store.path);
      return f.nBackfill === f.mxFrame;
    });
    store.close();
    expect(existsSync(`${store.path}-wal`)).toBe(false);
  });

  test("one worker serves every store; closing one leaves the other's checkpoints running", async () => {
    const approvals = ApprovalStore.open(tempDir("toolgate-ckpt-"));
    const containment = ContainmentStore.open(tempDir("toolgate-ckpt-"));
    const started = checkpointWorker().started;
    while (walFrames(approvals.path).mxFrame < CHECKPOINT_FRAMES + 100)
      approvals.addEvaluation(evaluation());
    let i = 0;
    while (walFrames(containment.path).mxFrame < CHECKPOINT_FRAMES + 100) {
      i++;
      containment.addReservations([
        { decisionId: `x${i}`, key: "budget:a", at: 1_000, expiresAt: 2_000, amount: 1 },
      ]);
    }
    expect(checkpointerOf(approvals).kicked && checkpointerOf(containment).kicked).toBe(true);
    expect(checkpointWorker().started).toBe(started + 1);
    approvals.close();
    expect(existsSync(`${approvals.path}-wal`)).toBe(false); // the worker had let go of it
    expect(checkpointWorker().running).toBe(true);
    await until("the containment checkpoint", () => {
      const f = walFrames(containment.path);
      return f.nBackfill === f.mxFrame;
    });
    containment.close();
    expect(checkpointWorker().running).toBe(false);
    expect(existsSync(`${containment.path}-wal`)).toBe(false);
  });

  test("budget reservations wake the worker too, and syncReservations still resolves", async () => {
    const store = ContainmentStore.open(tempDir("toolgate-ckpt-"));
    let i = 0;
    while (walFrames(store.path).mxFrame < CHECKPOINT_FRAMES + 100) {
      i++;
      store.addReservations([
        { decisionId: `d${i}`, key: "budget:a", at: 1_000, expiresAt: 2_000, amount: 1 },
      ]);
      if (i % 50 === 0) await store.syncReservations();
    }
    await store.syncReservations();
    expect(checkpointerOf(store).kicked).toBe(true);
    await until("the worker's checkpoint", () => {
      const f = walFrames(store.path);
      return f.nBackfill === f.mxFrame;
    });
    store.addReservations([
      { decisionId: "last", key: "budget:a", at: 1_000, expiresAt: 2_000, amount: 1 },
    ]);
    await store.syncReservations(); // the WAL started over under WalSync's open descriptor
    expect(walFrames(store.path).mxFrame).toBeLessThan(20);
    store.close();
    expect(existsSync(`${store.path}-wal`)).toBe(false);
  });

  test("the worker runs from its built file (dist/, built before the tests)", () => {
    expect(checkpointWorkerFile()).toBe(
      join(__dirname, "..", "..", "dist", "src", "shared", "checkpoint-worker.js"),
    );
  });

  test("settings of the wrong shape stop the worker before it opens anything", async () => {
    const file = checkpointWorkerFile();
    if (file === undefined) throw new Error("no built checkpoint worker");
    const control = new SharedArrayBuffer(6 * 4);
    const good = {
      control,
      slots: [0, 1, 2, 3, 4, 5, 0, 1, 2],
      busyTimeoutMs: 5000,
      idleMs: 30_000,
      catchUp: 32,
      pauseMs: 10,
    };
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...good, control: new ArrayBuffer(24) }, /control is not a SharedArrayBuffer/],
      [{ ...good, port: "port" }, /port is not a port/],
      [{ ...good, slots: [0, 1, 2, 3, 4, 5, 0, 1] }, /slots is not nine indices/],
      [{ ...good, slots: [0, 1, 2, 3, 4, 6, 0, 1, 2] }, /outside the control block/],
      [{ ...good, idleMs: -1 }, /idleMs is not a non-negative integer/],
      [{ ...good, pauseMs: "10" }, /pauseMs is not a non-negative integer/],
    ];
    for (const [data, message] of bad) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(file, {
        workerData: { port: port2, ...data },
        transferList: [port2],
        env: {},
      });
      const err = await new Promise<unknown>((resolve) => {
        w.once("error", resolve);
        w.once("exit", () => resolve(undefined));
      });
      port1.close();
      expect(String(err)).toMatch(message);
    }
    expect(Array.from(new Int32Array(control))).toEqual([0, 0, 0, 0, 0, 0]); // nothing began
  });

  test("without the built worker no worker starts: failed is reported, the store works and its WAL stays bounded", async () => {
    // a tree with the store and what it imports, but no checkpoint-worker.js and no package root above it
    const out = tempDir("toolgate-ckpt-tree-");
    const storeJs = transpileSrc("src/approvals/store.ts", out);
    const sqliteJs = join(out, "src", "shared", "sqlite.js");
    expect(existsSync(join(out, "src", "shared", "checkpoint-worker.js"))).toBe(false);
    const source = `
      const { workerData, parentPort } = require("node:worker_threads");
      const { ApprovalStore } = require(workerData.storeJs);
      const s = require(workerData.sqliteJs);
      const store = ApprovalStore.open(workerData.dir);
      const fd = require("node:fs").openSync(store.path + "-shm", "r");
      const buf = Buffer.alloc(104);
      let max = 0, restarts = 0, last = 0;
      for (let n = 1; n <= 5000; n++) {
        store.addEvaluation({
          evaluationId: "ev_" + n, decisionId: "dec_" + n, bindingHash: "h" + n,
          bindingContextMembers: ["subject"],
          redactedRequest: { tool: "t", arguments: { note: "x".repeat(300), n } },
          requirement: { approvers: ["finance"] }, initiator: "user:alice", agentId: "a",
          tool: "t", createdAt: 1000, expiresAt: 2000000000000,
        });
        const m = s.readWalFrames(fd, buf).mxFrame;
        if (m < last) restarts++;
        last = m;
        max = Math.max(max, m);
      }
      require("node:fs").closeSync(fd);
      const w = s.checkpointWorker();
      const found = store.getEvaluation("ev_5000") !== undefined;
      store.close();
      parentPort.postMessage({ file: s.checkpointWorkerFile() ?? null, worker: w, max, restarts, found,
        wal: require("node:fs").existsSync(store.path + "-wal") });
    `;
    const w = new Worker(source, {
      eval: true,
      workerData: { storeJs, sqliteJs, dir: tempDir("toolgate-ckpt-") },
    });
    const got = await new Promise<Record<string, unknown>>((resolve, reject) => {
      w.once("message", resolve);
      w.once("error", reject);
    });
    expect(got).toEqual({
      file: null,
      worker: { started: 0, running: false, runs: 0, restarts: 0, failed: true },
      max: expect.any(Number) as number,
      restarts: expect.any(Number) as number,
      found: true,
      wal: false,
    });
    expect(got["restarts"]).toBeGreaterThan(0); // the store's own auto-checkpoint...
    expect(got["max"]).toBeLessThan(HARD_CAP_FRAMES + 50); // ...at the cap, as the safety net
  });
});
