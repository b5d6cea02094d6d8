/** The public surface of src/fleet: a sidecar's side of fleet mode. */
export { FleetClient, type FleetClientOptions, type Freshness } from "./client";
export {
  FleetContainment,
  LEASE_TTL_MS,
  toolClass,
  type FleetContainmentOptions,
} from "./containment";
export { FleetApprovals, type FleetApprovalsOptions } from "./approvals";
export { FleetSessions } from "./sessions";
export { devCredential, fileCredential, type Credential } from "./credential";
export { SseParser, type SseEvent } from "./sse";
export { FLEET } from "./config";
