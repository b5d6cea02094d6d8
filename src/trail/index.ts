export { canonicalJson, GENESIS_HASH, RECOVERED_KIND } from "./format";
export { expandTrailPaths, listTrailFiles, trailFileName, type ExpandOptions } from "./paths";
export {
  readTrail,
  TrailLine,
  type ChainFacts,
  type LineCheck,
  type ParsedJson,
  type TrailEntry,
} from "./reader";
export { type BreakReason, verifyTrail, type VerifyOptions, type VerifyResult } from "./verify";
export {
  AuditTrail,
  MAX_PENDING_LINES,
  TRAIL_DEFAULTS,
  type TrailOptions,
  type TrailStats,
} from "./writer";
