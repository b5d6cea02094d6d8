import type { Readiness } from "../shared/lifecycle";

/**
 * GET /v1/status on either port: the version, the agent served and whether
 * every component is ready, with the port's own members before `components`.
 */
export function statusView(
  version: string,
  agentId: string,
  readiness: Readiness,
  members: Record<string, unknown>,
): Record<string, unknown> {
  return {
    version,
    agent: { id: agentId },
    ready: readiness.ready,
    ...members,
    components: readiness.components,
  };
}
