export {
  migrateFleetStore,
  postgresUrl,
  startControlService,
  type ControlService,
  type ControlServiceOptions,
  type OpenStore,
} from "./service";
export { createControlServiceApp, type ControlServiceDeps } from "./server";
export { claimAt, SidecarCredentials } from "./auth";
