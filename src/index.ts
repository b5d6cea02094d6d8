/**
 * The package's main entry point (`require("toolgate")`): embed the sidecar.
 * Tool backends import only `toolgate/verify` (src/grants/verify.ts).
 */
export { buildParts, startToolgate, type Parts, type Toolgate } from "./app";
export { compileConfig, loadConfig, type CompiledConfig } from "./config";
export type * from "./model";
export { ERRORS, ToolgateError, isToolgateError } from "./errors";
export * from "./grants/verify";
