/**
 * The `containment` section of the config schema: budget reservations
 * (docs/containment.md). Leaf-level: imports only the schema builder.
 */
import { bool, int } from "../shared/config-spec";

export const CONTAINMENT = {
  /** Null: the tool's grant lifetime + 300 s. */
  reservationTtlSeconds: int({
    key: "containment.reservation_ttl_seconds",
    env: "TOOLGATE_RESERVATION_TTL_SECONDS",
    min: 1,
    max: 7 * 24 * 3600,
    default: null,
    doc: "How long a budget reservation (made by each allow of a budgeted tool) waits for the action report of its decision: until then an ok report commits it and an error report releases it; after, it counts as spent, never released. Default: the tool's grant lifetime (`grants.tools`, else `grants.ttl_seconds`) + 300 s.",
  }),
  reservationFsync: bool({
    key: "containment.reservation_fsync",
    env: "TOOLGATE_RESERVATION_FSYNC",
    default: true,
    doc: "Make each budget reservation durable before its allow is answered (it then survives power loss): the allow waits for an fdatasync of containment.db's WAL, run off the event loop and shared by every reservation written meanwhile (group commit), so other decisions never wait for the disk. False: no wait: a reservation survives a crash or restart of toolgate, but a power loss or OS crash may lose the reservations made since the last fsync of containment.db, reopening their budgets.",
  }),
};
