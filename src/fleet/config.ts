/**
 * The `fleet` section of the config schema: how a sidecar joins a fleet
 * (`fleet.url`, its credential, bounded staleness) and how `toolgate control`
 * reaches PostgreSQL and verifies sidecars (`fleet.postgres_url`,
 * `fleet.jwt`). Leaf-level: imports only the schema builder and identity's
 * token keys.
 */
import { int, path, section, text } from "../shared/config-spec";
import { tokenSpec } from "../identity/config";

export const FLEET = section(
  {
    url: text({
      key: "fleet.url",
      env: "TOOLGATE_FLEET_URL",
      pattern: /^https?:\/\/\S+$/,
      hint: "the control service's http(s) URL",
      default: null,
      doc: "Fleet mode: the URL of `toolgate control`. Kill switches, approvals, budgets and rate limits are then shared by every sidecar of the fleet (docs/fleet.md). Unset: this sidecar keeps them itself (SQLite under state.dir).",
    }),
    maxStalenessSeconds: int({
      key: "fleet.max_staleness_seconds",
      env: "TOOLGATE_FLEET_MAX_STALENESS_SECONDS",
      min: 1,
      max: 3600,
      default: 10,
      doc: "Fleet mode: once the kill-switch stream has been down this long (or before it first connected), approve-, execute- and admin-class tools are denied with `containment_stale` (reads go on), and /health/ready says so.",
    }),
    credentialFile: path({
      key: "fleet.credential_file",
      env: "TOOLGATE_FLEET_CREDENTIAL_FILE",
      default: null,
      doc: "Fleet mode: a file holding the sidecar's bearer token for the control service (a Kubernetes projected service-account token; re-read on every connection, as the kubelet rotates it). Unset while `fleet.jwt` trusts the development key: the sidecar signs its own short-lived token with the committed development key (development only).",
    }),
    postgresUrl: text({
      key: "fleet.postgres_url",
      env: "TOOLGATE_POSTGRES_URL",
      pattern: /^postgres(ql)?:\/\/\S+$/,
      hint: "a postgres:// URL",
      default: null,
      doc: "`toolgate control`: the PostgreSQL database holding the fleet's state. Required by `toolgate control`; never used by a sidecar. Never logged.",
      secret: true,
    }),
    jwt: tokenSpec(
      "fleet.jwt",
      "TOOLGATE_FLEET_JWT",
      "toolgate-fleet",
      "the control service's sidecar API (sidecar credentials)",
    ),
    agentClaim: text({
      key: "fleet.jwt.agent_claim",
      env: "TOOLGATE_FLEET_JWT_AGENT_CLAIM",
      pattern: /^[A-Za-z0-9_:./-]{1,256}$/,
      hint: "a claim name, or a /-separated path into nested claims",
      default: "toolgate_agent",
      doc: "`toolgate control`: the claim of a sidecar credential naming the agent it speaks for; a `/`-separated path reads nested claims (Kubernetes service-account tokens: `kubernetes.io/serviceaccount/name`, the chart names each agent's service account after the agent).",
    }),
  },
  {
    compile: ({ jwt, agentClaim, ...rest }) => ({ ...rest, jwt: { ...jwt, agentClaim } }),
  },
);
