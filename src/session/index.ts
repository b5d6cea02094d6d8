/** The public surface of src/session: session state for the policy. */
export { SESSION } from "./config";
export {
  SESSION_WINDOWS_SECONDS,
  SessionStore,
  checkToolRegistry,
  LABEL_PATTERN,
  toolRegistry,
  toolTotals,
  type RegistrySource,
  type SessionOptions,
  type SessionView,
  type ToolFacts,
} from "./store";
