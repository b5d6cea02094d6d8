/**
 * The `session` section of the config schema: what toolgate keeps of each
 * session for the policy (`input.verified.session`, docs/sessions.md).
 * Leaf-level: imports only the schema builder.
 */
import { int, oneOf } from "../shared/config-spec";

export const SESSION = {
  maxEvents: int({
    key: "session.max_events",
    env: "TOOLGATE_SESSION_MAX_EVENTS",
    min: 0,
    max: 100_000,
    default: 1000,
    doc: "Decisions kept per session for the policy's windowed counts and sums (the oldest go first). The per-tool and per-label totals count every decision of the session whatever this is. 0 turns session state off: the policy sees no `verified.session`.",
  }),
  maxSessions: int({
    key: "session.max_sessions",
    env: "TOOLGATE_SESSION_MAX_SESSIONS",
    min: 1,
    max: 1_000_000,
    default: 1000,
    doc: "Sessions kept at once; beyond this the least recently active is forgotten (its next decision starts a fresh summary, which is logged and counted).",
  }),
  maxTotalEvents: int({
    key: "session.max_total_events",
    env: "TOOLGATE_SESSION_MAX_TOTAL_EVENTS",
    min: 1,
    max: 10_000_000,
    default: 100_000,
    doc: "Decisions kept for the windows over all sessions together (at least session.max_events); beyond this the least recently active sessions are forgotten first. Bounds memory whatever the agent does: an event takes about 160 bytes, up to about 800 with many numeric arguments (docs/sessions.md).",
  }),
  fleetScope: oneOf(["labels", "full"], {
    key: "session.fleet_scope",
    env: "TOOLGATE_SESSION_FLEET_SCOPE",
    default: "labels",
    doc: "Fleet mode: what of a session is kept fleet-wide by toolgate control. `labels`: the data labels its allowed calls read (a labelled read and an egress call each wait on the control service; other calls make no hop). `full`: also every allowed call's tool and numeric arguments, so counts, windows and sums are fleet-wide — every decision in a session then waits on the control service (docs/sessions.md).",
  }),
  retentionSeconds: int({
    key: "session.retention_seconds",
    env: "TOOLGATE_SESSION_RETENTION_SECONDS",
    min: 60,
    max: 31 * 24 * 3600,
    default: 86_400,
    doc: "A session idle this long is forgotten (and its events leave the windows when older than this).",
  }),
};
