/**
 * Durable containment state on the built-in `node:sqlite` (`DatabaseSync`):
 * kill switches and confirmed budget consumption.
 *
 * One file, `<dir>/containment.db` (created 0600 in a 0700 directory), WAL
 * journal, `synchronous=FULL` (a switch that was acknowledged survives power
 * loss), `busy_timeout`. Every call is synchronous; every change is one
 * transaction. The same approach as src/approvals/store.ts: versioned
 * migrations in `schema_migrations` (mirrored in `PRAGMA user_version`), one
 * `BEGIN IMMEDIATE` per migration, an unknown (newer) version refused.
 *
 * - `killswitches`: one row per switch, never deleted: DELETE on the API sets
 *   `deleted_at`/`deleted_by` once (guarded UPDATE plus a trigger), so the
 *   table is also the history of who stopped what, when and why.
 * - `budget_events`: append-only, one row per confirmed action that counts
 *   against a budget (`decision_id` unique: a report is counted once).
 * - `budget_reservations`: one row per allowed decision and budget it counts
 *   against, written before the allow leaves toolgate. A report bound to the
 *   decision deletes it (committed into `budget_events`, or released); a row
 *   that is never resolved keeps counting: pending until `expires_at`, spent
 *   at `expires_at` after that. A restart reloads both tables, so it cannot
 *   reopen a budget.
 *
 * Reservations are written on the decision path, on a second
 * `synchronous=NORMAL` connection (the commit does not fsync, so the event
 * loop never waits for the disk). By default (`containment.reservation_fsync`)
 * the allow then waits for `syncReservations()`: a group fdatasync of the WAL
 * on libuv's thread pool (src/shared/wal-sync.ts), shared by every
 * reservation written meanwhile, after which the reservation survives power
 * loss like the spend it stands for — the durability of a `synchronous=FULL`
 * commit, without its fsync on the event loop. With
 * `containment.reservation_fsync: false` there is no such wait: a reservation
 * survives a process crash, and the next fsynced commit on either connection
 * makes it durable, but a power loss or OS crash may lose the reservations
 * written since (see docs/containment.md). WAL checkpoints run on a worker
 * thread (`Checkpointer`, src/shared/checkpointer.ts; `wrote()` after each
 * reservation or report lets it see when one is due).
 *
 * Errors: any SQLite failure becomes `containment_store_unavailable` (503).
 * Times are epoch milliseconds.
 */
import { randomBytes } from "node:crypto";
import { type SQLInputValue } from "node:sqlite";
import { synchronousOf, type Migration, SqliteStore, type OpenedStore } from "../shared/sqlite";
import { WalSync } from "../shared/wal-sync";
import { normalizeError, toolgateError } from "../errors";
import { nullProto, parseUntrustedJson } from "../shared/guards";

export const CONTAINMENT_DB_FILE = "containment.db";
const BUSY_TIMEOUT_MS = 5000;

/** What a switch stops; an absent member matches anything, an empty scope everything. */
export interface SwitchScope {
  agent?: string;
  tool?: string;
  subject?: string;
  job?: string;
}

export const SCOPE_KEYS = ["agent", "tool", "subject", "job"] as const;

export interface KillSwitch {
  id: string;
  scope: SwitchScope;
  reason: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  deleted_at?: string | null;
  deleted_by?: string | null;
  /**
   * False while the change is in force in memory but not yet in
   * containment.db (the store refused it; a background retry writes it).
   */
  persisted: boolean;
  /** With `persisted: false`: why the store refused it. */
  persist_error?: string;
}

/** A switch as held in memory (times as epoch ms for the decision path). */
export interface SwitchRow {
  id: string;
  scope: SwitchScope;
  reason: string;
  createdBy: string;
  createdAt: number;
  expiresAt: number | null;
  deletedAt: number | null;
  deletedBy: string | null;
}

export interface BudgetEvent {
  key: string;
  at: number;
  amount: number;
}

/** A budget reservation as stored: one per decision and budget key. */
export interface Reservation {
  decisionId: string;
  key: string;
  amount: number;
  /** When the decision reserved it (epoch ms). */
  at: number;
  /** Unresolved until then (pending); spent at this time afterwards. */
  expiresAt: number;
}

/** Append only: never edit a released migration, add the next one. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "create killswitches, budget_events",
    sql: `
CREATE TABLE killswitches (
  id TEXT PRIMARY KEY,
  scope_json TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  deleted_at INTEGER,
  deleted_by TEXT
) STRICT;
CREATE INDEX killswitches_active ON killswitches (deleted_at, expires_at);
CREATE TRIGGER killswitches_deleted_once BEFORE UPDATE ON killswitches
WHEN OLD.deleted_at IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'kill switch already deleted'); END;
CREATE TRIGGER killswitches_immutable BEFORE UPDATE OF id, scope_json, reason, created_by, created_at, expires_at ON killswitches
BEGIN SELECT RAISE(ABORT, 'a kill switch is immutable; delete it and create another'); END;

CREATE TABLE budget_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  budget_key TEXT NOT NULL,
  decision_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  amount REAL NOT NULL,
  UNIQUE (budget_key, decision_id)
) STRICT;
CREATE INDEX budget_events_by_key ON budget_events (budget_key, at);
CREATE TRIGGER budget_events_append_only_u BEFORE UPDATE ON budget_events
BEGIN SELECT RAISE(ABORT, 'budget_events is append-only'); END;
`,
  },
  {
    version: 2,
    name: "create budget_reservations",
    sql: `
CREATE TABLE budget_reservations (
  decision_id TEXT NOT NULL,
  budget_key TEXT NOT NULL,
  at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  amount REAL NOT NULL,
  PRIMARY KEY (decision_id, budget_key)
) STRICT;
CREATE INDEX budget_reservations_by_expiry ON budget_reservations (expires_at);
CREATE TRIGGER budget_reservations_immutable BEFORE UPDATE ON budget_reservations
BEGIN SELECT RAISE(ABORT, 'a budget reservation is resolved by deleting it'); END;
`,
  },
];

export const SCHEMA_VERSION = MIGRATIONS.reduce((v, m) => Math.max(v, m.version), 0);

type Row = Record<string, SQLInputValue>;

function text(r: Row, k: string): string {
  const v = r[k];
  if (typeof v !== "string") throw new Error(`containment.db: column ${k} is not text`);
  return v;
}

function toSwitch(r: Row): SwitchRow {
  const n = (k: string): number | null =>
    r[k] === null || r[k] === undefined ? null : Number(r[k]);
  return {
    id: text(r, "id"),
    scope: nullProto(parseUntrustedJson(text(r, "scope_json")) as SwitchScope),
    reason: text(r, "reason"),
    createdBy: text(r, "created_by"),
    createdAt: Number(r.created_at),
    expiresAt: n("expires_at"),
    deletedAt: n("deleted_at"),
    deletedBy: r.deleted_by === null || r.deleted_by === undefined ? null : text(r, "deleted_by"),
  };
}

/** An unguessable switch id: `ks_` + 96 random bits. */
export function newSwitchId(): string {
  return `ks_${randomBytes(12).toString("base64url")}`;
}

export interface ContainmentStoreOptions {
  /**
   * Make each budget reservation durable before its allow is answered
   * (default true): `syncReservations()` then waits for a group fdatasync of
   * the WAL. False: it resolves at once (see the header comment).
   */
  reservationFsync?: boolean;
}

export class ContainmentStore extends SqliteStore {
  /** The reservations' group fdatasync; undefined when reservation_fsync is off. */
  private readonly walSync: WalSync | undefined;

  private constructor(o: OpenedStore, reservationFsync: boolean) {
    super(o, "containment_store_unavailable", "containment store");
    this.walSync = reservationFsync ? new WalSync(`${o.path}-wal`) : undefined;
  }

  /** Opens (creating and migrating as needed) `<dir>/containment.db`. */
  static open(dir: string, opts: ContainmentStoreOptions = {}): ContainmentStore {
    return new ContainmentStore(
      SqliteStore.openFiles({
        dir,
        file: CONTAINMENT_DB_FILE,
        code: "containment_store_unavailable",
        label: "containment store",
        busyTimeoutMs: BUSY_TIMEOUT_MS,
        migrations: MIGRATIONS,
        // reservations go through `normal`; their durability is syncReservations()
        normal: true,
      }),
      opts.reservationFsync !== false,
    );
  }

  /**
   * `PRAGMA synchronous` of the main connection and of the one reservations
   * use, and how a reservation is made durable before its allow is answered.
   */
  synchronousModes(): { main: string; reservations: string; reservationSync: string } {
    return this.run("read synchronous", () => ({
      main: synchronousOf(this.db),
      reservations: synchronousOf(this.normal),
      reservationSync: this.walSync === undefined ? "none" : "group fdatasync of the WAL",
    }));
  }

  /**
   * Resolves once every reservation written before the call is on disk (a
   * group fdatasync of the WAL, off the event loop); at once when
   * reservation_fsync is off. Rejects with `containment_store_unavailable`
   * when that cannot be known (the caller fails closed).
   */
  syncReservations(): Promise<void> | undefined {
    if (this.walSync === undefined) return undefined;
    if (this.closed)
      return Promise.reject(
        toolgateError("containment_store_unavailable", "containment store is closed"),
      );
    return this.walSync.sync().catch((e: unknown) => {
      throw toolgateError(
        "containment_store_unavailable",
        `containment store: the budget reservation could not be made durable (fdatasync of ${this.walSync?.walPath ?? "the WAL"}): ${normalizeError(e).message}`,
      );
    });
  }

  /** fdatasyncs of the WAL completed for reservations (0 when reservation_fsync is off). */
  reservationSyncs(): number {
    return this.walSync?.syncs ?? 0;
  }

  override close(): void {
    this.walSync?.close();
    super.close();
  }

  insertSwitch(s: SwitchRow): void {
    this.run("create kill switch", () => {
      this.db
        .prepare(
          `INSERT INTO killswitches (id, scope_json, reason, created_by, created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?)`,
        )
        .run(s.id, JSON.stringify(s.scope), s.reason, s.createdBy, s.createdAt, s.expiresAt);
    });
  }

  /** Marks a switch deleted, once (guarded). Returns the row, or undefined if unknown/deleted. */
  deleteSwitch(id: string, by: string, now: number): SwitchRow | undefined {
    return this.run("delete kill switch", () => {
      const res = this.db
        .prepare(
          "UPDATE killswitches SET deleted_at = ?, deleted_by = ? WHERE id = ? AND deleted_at IS NULL",
        )
        .run(now, by, id);
      if (res.changes !== 1) return undefined;
      const row = this.db.prepare("SELECT * FROM killswitches WHERE id = ?").get(id) as Row;
      return toSwitch(row);
    });
  }

  /** Switches not deleted and not expired at `now`, oldest first. */
  activeSwitches(now: number): SwitchRow[] {
    return this.run("list kill switches", () =>
      (
        this.db
          .prepare(
            `SELECT * FROM killswitches WHERE deleted_at IS NULL
               AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, id`,
          )
          .all(now) as Row[]
      ).map(toSwitch),
    );
  }

  /** Every switch ever set (history), newest first; `limit` clamped to 1..1000. */
  allSwitches(limit = 100): SwitchRow[] {
    const n = Number.isFinite(limit) ? Math.min(1000, Math.max(1, Math.trunc(limit))) : 100;
    return this.run("list kill switches", () =>
      (
        this.db
          .prepare("SELECT * FROM killswitches ORDER BY created_at DESC, id LIMIT ?")
          .all(n) as Row[]
      ).map(toSwitch),
    );
  }

  /** Records one confirmed consumption; false when this decision was already counted. */
  addBudgetEvent(key: string, decisionId: string, at: number, amount: number): boolean {
    return this.run("record budget consumption", () => {
      const res = this.db
        .prepare(
          `INSERT OR IGNORE INTO budget_events (budget_key, decision_id, at, amount)
           VALUES (?, ?, ?, ?)`,
        )
        .run(key, decisionId, at, amount);
      return res.changes === 1;
    });
  }

  /** Budget events at or after `since`, oldest first (loaded at start). */
  budgetEventsSince(since: number): BudgetEvent[] {
    return this.run("read budget events", () =>
      (
        this.db
          .prepare(
            "SELECT budget_key, at, amount FROM budget_events WHERE at >= ? ORDER BY at, seq",
          )
          .all(since) as Row[]
      ).map((r) => ({ key: text(r, "budget_key"), at: Number(r.at), amount: Number(r.amount) })),
    );
  }

  /**
   * Records the reservations of one allowed decision, all or none (one
   * transaction on the reservation connection). Throws
   * `containment_store_unavailable` when they cannot be written.
   */
  addReservations(rs: readonly Reservation[]): void {
    if (rs.length === 0) return;
    this.run("record budget reservation", () => {
      const db = this.normal;
      const stmt = db.prepare(
        `INSERT INTO budget_reservations (decision_id, budget_key, at, expires_at, amount)
         VALUES (?, ?, ?, ?, ?)`,
      );
      if (rs.length === 1) {
        const r = rs[0] as Reservation;
        stmt.run(r.decisionId, r.key, r.at, r.expiresAt, r.amount);
        return;
      }
      db.exec("BEGIN IMMEDIATE");
      try {
        for (const r of rs) stmt.run(r.decisionId, r.key, r.at, r.expiresAt, r.amount);
        db.exec("COMMIT");
      } catch (e) {
        if (db.isTransaction) db.exec("ROLLBACK");
        throw e;
      }
    });
    this.wrote();
  }

  /**
   * A report confirmed the decision's action: its reservations become budget
   * events at `at` and are deleted, in one fsynced transaction. Returns how
   * many reservations it resolved (0: none left, e.g. already resolved).
   */
  commitReservations(decisionId: string, at: number): number {
    return this.run("commit budget reservation", () => {
      this.db.exec("BEGIN IMMEDIATE");
      try {
        this.db
          .prepare(
            `INSERT OR IGNORE INTO budget_events (budget_key, decision_id, at, amount)
             SELECT budget_key, decision_id, ?, amount FROM budget_reservations WHERE decision_id = ?`,
          )
          .run(at, decisionId);
        const res = this.db
          .prepare("DELETE FROM budget_reservations WHERE decision_id = ?")
          .run(decisionId);
        this.db.exec("COMMIT");
        this.wrote();
        return Number(res.changes);
      } catch (e) {
        if (this.db.isTransaction) this.db.exec("ROLLBACK");
        throw e;
      }
    });
  }

  /** A report said the action failed: its reservations are deleted (fsynced). */
  releaseReservations(decisionId: string): number {
    return this.run("release budget reservation", () =>
      Number(
        this.db.prepare("DELETE FROM budget_reservations WHERE decision_id = ?").run(decisionId)
          .changes,
      ),
    );
  }

  /** Every stored reservation whose `expires_at` is after `since` (loaded at start). */
  reservationsSince(since: number): Reservation[] {
    return this.run("read budget reservations", () =>
      (
        this.db
          .prepare(
            `SELECT decision_id, budget_key, at, expires_at, amount FROM budget_reservations
             WHERE expires_at >= ? ORDER BY at, decision_id`,
          )
          .all(since) as Row[]
      ).map((r) => ({
        decisionId: text(r, "decision_id"),
        key: text(r, "budget_key"),
        at: Number(r.at),
        expiresAt: Number(r.expires_at),
        amount: Number(r.amount),
      })),
    );
  }

  /** Deletes reservations that expired before `before` (they left every window). */
  pruneReservations(before: number): number {
    return this.run("prune budget reservations", () =>
      Number(
        this.db.prepare("DELETE FROM budget_reservations WHERE expires_at < ?").run(before).changes,
      ),
    );
  }
}
