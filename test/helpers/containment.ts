import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { startToolgate, type Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import { silentLogger, type Logger } from "../../src/shared/log";
import { buildWasmBundle, tempDir } from "./opa";

const root = join(__dirname, "..", "..");

/** The reference deployment's data (rego/toolgate/deployment/data.json). */
export function referenceData(): Record<string, unknown> {
  return JSON.parse(
    readFileSync(join(root, "rego", "toolgate", "deployment", "data.json"), "utf8"),
  ) as Record<string, unknown>;
}

/**
 * Builds the policy library with the reference data edited by `edit` (the
 * reference bundle itself stays as the brief describes it).
 */
export function libraryBundle(
  edit: (data: Record<string, unknown>) => void,
  revision = "fixture-1",
): string {
  const dir = join(root, "rego", "toolgate");
  const files: Record<string, string> = {};
  for (const f of readdirSync(dir)) {
    if (f.endsWith(".rego") && !f.endsWith("_test.rego"))
      files[`toolgate/${f}`] = readFileSync(join(dir, f), "utf8");
  }
  const data = referenceData();
  edit(data);
  files["toolgate/deployment/data.json"] = JSON.stringify(data);
  return buildWasmBundle(files, { revision });
}

/** A real toolgate on free ports (agent and control), with a controllable clock. */
export async function startWithClock(
  env: Record<string, string>,
  opts: { now?: () => number; log?: Logger } = {},
): Promise<Toolgate> {
  const config = compileConfig(
    {},
    {
      TOOLGATE_AGENT_PORT: "0",
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: tempDir("toolgate-state-"),
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      ...env,
    },
  );
  return startToolgate(config, opts.log ?? silentLogger, {
    env: { OTEL_SDK_DISABLED: "true" },
    ...(opts.now ? { now: opts.now } : {}),
  });
}

/**
 * The containment store's own SQLite connections (private fields, reached on
 * purpose): tests make real SQLite refuse the store's writes on them.
 */
function storeConnections(tg: Toolgate): DatabaseSync[] {
  const store = (
    tg.containment as unknown as { store: { db: DatabaseSync; normal: DatabaseSync } } | undefined
  )?.store;
  if (store === undefined) throw new Error("this toolgate runs without containment");
  return [...new Set([store.db, store.normal])];
}

const FULL = /database or disk is full/;
/** Filler row ids, unique across fills (short: shorter than any id the store writes). */
let fillerSeq = 0;

/**
 * Makes containment.db full, as a full disk does: SQLite's own size limit
 * (`PRAGMA max_page_count`) is pinned at the file's current size, then the
 * room left in each table (and its indexes) is taken by minimal rows that
 * count for nothing (deleted switches, budget rows of amount 0 at time 0),
 * until SQLite itself answers SQLITE_FULL "database or disk is full". Any row
 * the store writes afterwards is larger than those, so it needs a page SQLite
 * may not allocate: the store gets the same SQLITE_FULL.
 */
export function fillContainmentDb(tg: Toolgate): void {
  const conns = storeConnections(tg);
  const db = conns[0] as DatabaseSync;
  const pages = Number(
    (db.prepare("PRAGMA page_count").get() as { page_count: number }).page_count,
  );
  for (const c of conns) c.exec(`PRAGMA max_page_count = ${pages}`);
  const fillers: Array<(i: number) => void> = [
    (i) =>
      db
        .prepare(
          `INSERT INTO killswitches (id, scope_json, reason, created_by, created_at, deleted_at, deleted_by)
           VALUES (?, '{}', 'f', 'f', 0, 0, 'f')`,
        )
        .run(`f${i}`),
    (i) =>
      db
        .prepare(
          "INSERT INTO budget_reservations (decision_id, budget_key, at, expires_at, amount) VALUES (?, 'f', 0, 0, 0)",
        )
        .run(`f${i}`),
    (i) =>
      db
        .prepare(
          "INSERT INTO budget_events (budget_key, decision_id, at, amount) VALUES ('f', ?, 0, 0)",
        )
        .run(`f${i}`),
  ];
  // the fillers need no fsync each (the connection's own setting is restored after)
  const sync = Number(
    (db.prepare("PRAGMA synchronous").get() as { synchronous: number }).synchronous,
  );
  db.exec("PRAGMA synchronous = OFF");
  try {
    fillAll(fillers);
  } finally {
    db.exec(`PRAGMA synchronous = ${sync}`);
  }
}

function fillAll(fillers: Array<(i: number) => void>): void {
  for (const fill of fillers) {
    for (let i = 0; ; i++) {
      try {
        fill(fillerSeq++);
      } catch (e) {
        const msg = (e as Error).message;
        if (FULL.test(msg) || /no such table/.test(msg)) break;
        throw e;
      }
      if (i > 100_000) throw new Error("containment.db never filled up");
    }
  }
}

/** Gives containment.db room again (SQLite's default `max_page_count`). */
export function freeContainmentDb(tg: Toolgate): void {
  for (const c of storeConnections(tg)) c.exec("PRAGMA max_page_count = 4294967294");
}

/** Reads containment.db through a connection of its own (what is really on disk). */
export function readContainmentDb<T>(stateDir: string, sql: string): T[] {
  const db = new DatabaseSync(join(stateDir, "containment.db"), { readOnly: true });
  try {
    return db.prepare(sql).all() as T[];
  } finally {
    db.close();
  }
}

/** Builds the policy library with `limits` as the deployment's containment limits. */
export function limitsBundle(limits: Record<string, unknown>, revision = "limits-fixture"): string {
  return libraryBundle((data) => {
    data.limits = limits;
  }, revision);
}
