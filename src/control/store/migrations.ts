/**
 * The fleet store's schema, as versioned migrations (append only: never edit
 * a released one, add the next), and the runner that applies them.
 *
 * `schema_migrations(version, name, applied_at)` is authoritative. The runner
 * takes a session-level `pg_advisory_lock` first, so replicas of
 * `toolgate control` starting together (or `toolgate control migrate` run
 * beside them) migrate once: the second waits, then finds nothing to do. Each
 * migration is one transaction together with its schema_migrations row. A
 * database migrated by a newer toolgate (a version this code does not know)
 * is refused rather than guessed at.
 *
 * Times are epoch milliseconds in `bigint` columns (the caller's clock, as
 * the sidecar's SQLite stores); amounts and tokens are `double precision`.
 * JSON members are `jsonb` and are read back as text and parsed through the
 * forbidden-keys guard.
 */
import type { ClientBase } from "pg";
import { TASK_STATUSES } from "../../approvals/store";

export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

const STATUS_CHECK = TASK_STATUSES.map((s) => `'${s}'`).join(", ");

/**
 * The key of the session advisory lock the runner holds (one bigint; the
 * store's transaction locks use the two-int4 key space, which never collides
 * with it).
 */
export const MIGRATION_LOCK_SQL = "hashtextextended('toolgate.fleet.migrate', 0)";

export const MIGRATIONS: readonly PgMigration[] = [
  {
    version: 1,
    name: "create killswitches, switch_changes",
    sql: `
CREATE TABLE killswitches (
  id text PRIMARY KEY,
  scope jsonb NOT NULL,
  reason text NOT NULL,
  created_by text NOT NULL,
  created_at bigint NOT NULL,
  expires_at bigint,
  deleted_at bigint,
  deleted_by text
);
CREATE INDEX killswitches_active ON killswitches (created_at, id) WHERE deleted_at IS NULL;

CREATE FUNCTION toolgate_killswitches_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.deleted_at IS NOT NULL THEN
    RAISE EXCEPTION 'kill switch already deleted';
  END IF;
  IF NEW.id IS DISTINCT FROM OLD.id OR NEW.scope IS DISTINCT FROM OLD.scope
     OR NEW.reason IS DISTINCT FROM OLD.reason OR NEW.created_by IS DISTINCT FROM OLD.created_by
     OR NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
    RAISE EXCEPTION 'a kill switch is immutable; delete it and create another';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER killswitches_guard BEFORE UPDATE ON killswitches
  FOR EACH ROW EXECUTE FUNCTION toolgate_killswitches_guard();

CREATE TABLE switch_changes (
  seq bigserial PRIMARY KEY,
  switch_id text NOT NULL REFERENCES killswitches(id),
  op text NOT NULL CHECK (op IN ('create', 'delete')),
  at bigint NOT NULL
);

CREATE FUNCTION toolgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER switch_changes_append_only BEFORE UPDATE OR DELETE ON switch_changes
  FOR EACH ROW EXECUTE FUNCTION toolgate_append_only();
`,
  },
  {
    version: 2,
    name: "create approval_evaluations, approval_tasks, approval_task_events",
    sql: `
CREATE TABLE approval_evaluations (
  evaluation_id text PRIMARY KEY,
  decision_id text NOT NULL,
  agent_id text NOT NULL,
  binding_hash text NOT NULL,
  binding_context_members jsonb NOT NULL,
  redacted_request jsonb NOT NULL,
  requirement jsonb NOT NULL,
  reasons jsonb NOT NULL,
  initiator text NOT NULL,
  tool text NOT NULL,
  policy_revision text,
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL
);
CREATE INDEX approval_evaluations_by_expiry ON approval_evaluations (expires_at);
CREATE INDEX approval_evaluations_by_initiator ON approval_evaluations (initiator);

CREATE TABLE approval_tasks (
  id text PRIMARY KEY,
  -- one task per evaluation, ever
  evaluation_id text NOT NULL UNIQUE REFERENCES approval_evaluations(evaluation_id),
  agent_id text NOT NULL,
  status text NOT NULL CHECK (status IN (${STATUS_CHECK})),
  idempotency_key text,
  requester text,
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  decided_at bigint,
  decided_by text,
  decided_by_roles jsonb,
  comment text,
  approved_until bigint,
  used_at bigint,
  used_by_decision_id text,
  revoked_at bigint,
  revoked_by text,
  UNIQUE (agent_id, idempotency_key)
);
CREATE INDEX approval_tasks_by_status ON approval_tasks (status, created_at);
CREATE INDEX approval_tasks_by_agent ON approval_tasks (agent_id, created_at);
CREATE INDEX approval_tasks_by_created ON approval_tasks (created_at);

-- Second line of defence behind the guarded UPDATEs.
CREATE FUNCTION toolgate_approval_tasks_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'pending' AND NEW.status IS DISTINCT FROM OLD.status THEN
    RAISE EXCEPTION 'approval task status is terminal';
  END IF;
  IF OLD.used_at IS NOT NULL AND (NEW.used_at IS DISTINCT FROM OLD.used_at
       OR NEW.used_by_decision_id IS DISTINCT FROM OLD.used_by_decision_id) THEN
    RAISE EXCEPTION 'approval already used';
  END IF;
  IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
       OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by) THEN
    RAISE EXCEPTION 'approval already revoked';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER approval_tasks_guard BEFORE UPDATE ON approval_tasks
  FOR EACH ROW EXECUTE FUNCTION toolgate_approval_tasks_guard();

CREATE TABLE approval_task_events (
  seq bigserial PRIMARY KEY,
  task_id text NOT NULL REFERENCES approval_tasks(id),
  at bigint NOT NULL,
  event text NOT NULL,
  actor text NOT NULL,
  details jsonb NOT NULL
);
CREATE INDEX approval_task_events_by_task ON approval_task_events (task_id, seq);
CREATE TRIGGER approval_task_events_append_only BEFORE UPDATE OR DELETE ON approval_task_events
  FOR EACH ROW EXECUTE FUNCTION toolgate_append_only();
`,
  },
  {
    version: 3,
    name: "create budget_reservations, rate_buckets, sidecars",
    sql: `
-- One row per decision and budget key. Counts against its key: committed at
-- committed_at; unresolved: in full while pending (expires_at > now), spent at
-- expires_at after. A release deletes the row.
CREATE TABLE budget_reservations (
  decision_id text NOT NULL,
  key text NOT NULL,
  agent_id text NOT NULL,
  budget_id text NOT NULL,
  amount double precision NOT NULL CHECK (amount >= 0),
  window_seconds double precision NOT NULL CHECK (window_seconds > 0),
  at bigint NOT NULL,
  expires_at bigint NOT NULL,
  committed_at bigint,
  PRIMARY KEY (decision_id, key)
);
CREATE INDEX budget_reservations_counting ON budget_reservations (key, (COALESCE(committed_at, expires_at)));
CREATE INDEX budget_reservations_by_counts_from ON budget_reservations ((COALESCE(committed_at, expires_at)));

CREATE TABLE rate_buckets (
  key text PRIMARY KEY,
  tokens double precision NOT NULL,
  last_ms bigint NOT NULL
);
CREATE INDEX rate_buckets_by_last ON rate_buckets (last_ms);

CREATE TABLE sidecars (
  agent_id text NOT NULL,
  instance text NOT NULL,
  replica text NOT NULL,
  connected_at bigint NOT NULL,
  last_seen bigint NOT NULL,
  bundle_name text,
  bundle_revision text,
  version text,
  PRIMARY KEY (agent_id, instance)
);
CREATE INDEX sidecars_by_last_seen ON sidecars (last_seen);
`,
  },
  {
    version: 4,
    name: "budget reserve and resolve as one statement each",
    sql: `
-- reserve in one round trip: the same steps as the transaction it replaces
-- (PgFleetStore.reserve before version 4), in the same order. Locks every key
-- (transaction advisory locks, class 2, in ascending order of hashtext: no
-- deadlock, and the same locks as a replica still running the old code);
-- refuses a decision id of another agent (SQLSTATE TGB01); skips keys this
-- decision already reserved (a retry counts once); sums what counts in each
-- key's window in SQL (committed from committed_at, unresolved from
-- expires_at: in full while pending, spent after; the window is
-- (floor(now - window), ∞)), and answers the first item (in order) that
-- would go over its max, with retry_after the time until enough has left the
-- window (the oldest first), at least 1 s, the window when never; else
-- inserts the items with an amount > 0.
CREATE FUNCTION toolgate_budget_reserve(
  p_decision_id text, p_agent_id text, p_now bigint, p_expires_at bigint,
  p_keys text[], p_budget_ids text[], p_amounts double precision[],
  p_max_totals double precision[], p_windows double precision[],
  OUT o_ok boolean, OUT o_budget_id text, OUT o_used double precision,
  OUT o_max_total double precision, OUT o_amount double precision,
  OUT o_window_seconds double precision, OUT o_retry_after double precision)
LANGUAGE plpgsql AS $$
DECLARE
  v_hash integer;
  v_i integer;
  v_window_ms double precision;
  v_since double precision;
  v_since_ms bigint;
  v_freed double precision;
  v_row record;
BEGIN
  FOR v_hash IN SELECT DISTINCT hashtext(k) FROM unnest(p_keys) AS k ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(2, v_hash);
  END LOOP;
  IF EXISTS (SELECT 1 FROM budget_reservations b
             WHERE b.decision_id = p_decision_id AND b.agent_id <> p_agent_id) THEN
    RAISE EXCEPTION 'this decision id is another agent''s' USING ERRCODE = 'TGB01';
  END IF;
  FOR v_i IN 1 .. COALESCE(array_length(p_keys, 1), 0) LOOP
    CONTINUE WHEN EXISTS (SELECT 1 FROM budget_reservations b
                          WHERE b.decision_id = p_decision_id AND b.key = p_keys[v_i]);
    v_window_ms := p_windows[v_i] * 1000;
    v_since := floor(p_now - v_window_ms);
    -- no row counts from before 1970: a longer window is all of time
    v_since_ms := CASE WHEN v_since < 0 THEN -1 ELSE v_since::bigint END;
    SELECT COALESCE(sum(b.amount), 0) INTO o_used FROM budget_reservations b
      WHERE b.key = p_keys[v_i] AND COALESCE(b.committed_at, b.expires_at) > v_since_ms;
    IF o_used + p_amounts[v_i] > p_max_totals[v_i] THEN
      o_ok := false;
      o_budget_id := p_budget_ids[v_i];
      o_max_total := p_max_totals[v_i];
      o_amount := p_amounts[v_i];
      o_window_seconds := p_windows[v_i];
      o_retry_after := p_windows[v_i];
      v_freed := 0;
      FOR v_row IN SELECT b.amount AS amount, COALESCE(b.committed_at, b.expires_at) AS counts_from
                   FROM budget_reservations b
                   WHERE b.key = p_keys[v_i] AND COALESCE(b.committed_at, b.expires_at) > v_since_ms
                   ORDER BY 2 LOOP
        v_freed := v_freed + v_row.amount;
        IF o_used - v_freed + p_amounts[v_i] <= p_max_totals[v_i] THEN
          o_retry_after := greatest(1, ceil((v_row.counts_from + v_window_ms - p_now) / 1000));
          EXIT;
        END IF;
      END LOOP;
      RETURN;
    END IF;
  END LOOP;
  INSERT INTO budget_reservations
    (decision_id, key, agent_id, budget_id, amount, window_seconds, at, expires_at)
  SELECT p_decision_id, u.k, p_agent_id, u.bid, u.a, u.w, p_now, p_expires_at
  FROM unnest(p_keys, p_budget_ids, p_amounts, p_windows) AS u(k, bid, a, w)
  WHERE u.a > 0 AND NOT EXISTS (SELECT 1 FROM budget_reservations b
                                WHERE b.decision_id = p_decision_id AND b.key = u.k);
  o_ok := true;
  o_used := NULL;
END $$;

-- resolve in one round trip: the decision's unresolved rows of this agent,
-- locked; none → 'none'; now at or past their (shared) expiry → 'expired'
-- (they count as spent); else committed at now, or deleted.
CREATE FUNCTION toolgate_budget_resolve(
  p_decision_id text, p_agent_id text, p_commit boolean, p_now bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_until bigint;
BEGIN
  SELECT min(r.expires_at) INTO v_until FROM (
    SELECT b.expires_at FROM budget_reservations b
    WHERE b.decision_id = p_decision_id AND b.agent_id = p_agent_id AND b.committed_at IS NULL
    FOR UPDATE) r;
  IF v_until IS NULL THEN
    RETURN 'none';
  END IF;
  IF p_now >= v_until THEN
    RETURN 'expired';
  END IF;
  IF p_commit THEN
    UPDATE budget_reservations b SET committed_at = p_now
      WHERE b.decision_id = p_decision_id AND b.agent_id = p_agent_id AND b.committed_at IS NULL;
    RETURN 'committed';
  END IF;
  DELETE FROM budget_reservations b
    WHERE b.decision_id = p_decision_id AND b.agent_id = p_agent_id AND b.committed_at IS NULL;
  RETURN 'released';
END $$;
`,
  },
  {
    version: 5,
    name: "the agent's justification on a task; reasons with their messages",
    // reasons held the codes alone (["code", …]); rows are rewritten to
    // [{code, message: ""}] (the message was not kept). Readers accept both.
    sql: `
ALTER TABLE approval_tasks ADD COLUMN justification text;
UPDATE approval_evaluations SET reasons = (
  SELECT COALESCE(jsonb_agg(
    CASE WHEN jsonb_typeof(x) = 'string' THEN jsonb_build_object('code', x, 'message', '') ELSE x END
    ORDER BY n), '[]'::jsonb)
  FROM jsonb_array_elements(reasons) WITH ORDINALITY AS r(x, n))
WHERE jsonb_typeof(reasons) = 'array'
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(reasons) y WHERE jsonb_typeof(y) = 'string');
CREATE INDEX approval_evaluations_by_agent_tool ON approval_evaluations (agent_id, tool);
`,
  },
  {
    version: 6,
    name: "the tool's class and stage on an evaluation",
    sql: `
ALTER TABLE approval_evaluations ADD COLUMN tool_class text;
ALTER TABLE approval_evaluations ADD COLUMN tool_stage text;
`,
  },
  {
    version: 7,
    name: "create session_labels",
    sql: `
CREATE TABLE session_labels (
  agent_id text NOT NULL,
  session_id text NOT NULL,
  label text NOT NULL,
  count bigint NOT NULL CHECK (count > 0),
  first_at bigint NOT NULL,
  last_at bigint NOT NULL,
  tools text[] NOT NULL,
  first_decision_id text NOT NULL,
  last_decision_id text NOT NULL,
  PRIMARY KEY (agent_id, session_id, label)
);
CREATE INDEX session_labels_last_at ON session_labels (last_at);
`,
  },
  {
    version: 8,
    name: "create session_events",
    sql: `
CREATE TABLE session_events (
  agent_id text NOT NULL,
  session_id text NOT NULL,
  at bigint NOT NULL,
  tool text NOT NULL,
  decision_id text NOT NULL,
  sums jsonb NOT NULL
);
CREATE INDEX session_events_by_session ON session_events (agent_id, session_id, at);
CREATE INDEX session_events_at ON session_events (at);
`,
  },
];

export const SCHEMA_VERSION = MIGRATIONS.reduce((v, m) => Math.max(v, m.version), 0);

/**
 * Applies what `client`'s database lacks, under the migration advisory lock
 * (session level, released before returning, whatever happens). Returns the
 * versions applied. Throws plain errors; the store codes them.
 */
export async function runMigrations(
  client: ClientBase,
  migrations: readonly PgMigration[] = MIGRATIONS,
): Promise<number[]> {
  await client.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK_SQL})`);
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const res = await client.query<{ version: unknown }>("SELECT version FROM schema_migrations");
    const have = new Set<number>();
    for (const r of res.rows) {
      const v = r.version;
      if (typeof v !== "number" || !Number.isSafeInteger(v))
        throw new Error("schema_migrations.version is not an integer");
      have.add(v);
    }
    const known = new Set(migrations.map((m) => m.version));
    const unknown = [...have].filter((v) => !known.has(v)).sort((a, b) => a - b);
    if (unknown.length > 0) {
      throw new Error(
        `the database has schema version(s) ${unknown.join(", ")} this toolgate does not know ` +
          `(it knows up to ${Math.max(0, ...known)}): migrated by a newer toolgate; refusing to use it`,
      );
    }
    const applied: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (have.has(m.version)) continue;
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [
          m.version,
          m.name,
        ]);
        await client.query("COMMIT");
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw new Error(`migration ${m.version} (${m.name}): ${(e as Error).message}`, {
          cause: e,
        });
      }
      applied.push(m.version);
    }
    return applied;
  } finally {
    await client.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_SQL})`).catch(() => undefined);
  }
}
