/**
 * The `approvals` section of the config schema: access-request lifetime and
 * limits, and the webhook told of every pending task. Leaf-level: imports only
 * the schema builder.
 */
import { int, section, text } from "../shared/config-spec";

export const APPROVALS = section(
  {
    webhook: {
      url: text({
        key: "approvals.webhook.url",
        env: "TOOLGATE_APPROVALS_WEBHOOK_URL",
        pattern: /^https?:\/\/\S+$/,
        hint: "an http(s) URL",
        default: null,
        doc: "If set, every new pending approval task is POSTed here as a CloudEvents 1.0 structured JSON event (type dev.toolgate.approval.requested; `data` the approval), HMAC-signed with the secret below; retried with backoff. See docs/notifications.md.",
      }),
      secret: text({
        key: "approvals.webhook.secret",
        env: "TOOLGATE_APPROVALS_WEBHOOK_SECRET",
        pattern: /^.{16,}$/s,
        hint: "at least 16 characters",
        default: null,
        doc: "Key for the webhook's `X-Toolgate-Signature: sha256=<hex HMAC of the body>`. Required with the URL. Never logged.",
        secret: true,
      }),
    },
    notify: {
      slackWebhookUrl: text({
        key: "approvals.notify.slack_webhook_url",
        env: "TOOLGATE_APPROVALS_NOTIFY_SLACK_WEBHOOK_URL",
        pattern: /^https?:\/\/\S+$/,
        hint: "an http(s) URL (a Slack incoming webhook)",
        default: null,
        doc: "If set, every new pending access request is posted here as a Slack Block Kit message (the tool, the reason in words, who asked, the key argument as redacted, the agent's justification as the agent's, a link to its console page). A credential: never logged. See docs/notifications.md.",
        secret: true,
      }),
      teamsWebhookUrl: text({
        key: "approvals.notify.teams_webhook_url",
        env: "TOOLGATE_APPROVALS_NOTIFY_TEAMS_WEBHOOK_URL",
        pattern: /^https?:\/\/\S+$/,
        hint: "an http(s) URL (a Microsoft Teams incoming webhook)",
        default: null,
        doc: "If set, every new pending access request is posted here as an Adaptive Card (the same facts as the Slack message). A credential: never logged. See docs/notifications.md.",
        secret: true,
      }),
    },
    requestTtlSeconds: int({
      key: "approvals.request_ttl_seconds",
      env: "TOOLGATE_APPROVAL_REQUEST_TTL_SECONDS",
      min: 10,
      max: 7 * 24 * 3600,
      default: 900,
      doc: "How long a needs_approval answer may be turned into an access request (its `expires_at`).",
    }),
    /** Per initiator: at most `max` access requests not approved within `windowSeconds`. */
    requestLimit: {
      max: int({
        key: "approvals.request_limit.max",
        env: "TOOLGATE_APPROVAL_REQUEST_LIMIT_MAX",
        min: 1,
        max: 100_000,
        default: 20,
        doc: "Access requests per initiator that are not approved (pending, denied, cancelled, expired) allowed within `approvals.request_limit.window_seconds`; one more is 429 `access_request_rate_limited`.",
      }),
      windowSeconds: int({
        key: "approvals.request_limit.window_seconds",
        env: "TOOLGATE_APPROVAL_REQUEST_LIMIT_WINDOW_SECONDS",
        min: 1,
        max: 7 * 24 * 3600,
        default: 3600,
        doc: "The sliding window of `approvals.request_limit.max`, in seconds.",
      }),
    },
  },
  {
    check({ webhook }, { report }) {
      if ((webhook.url === null) !== (webhook.secret === null)) {
        report(
          `keys "approvals.webhook.url" and "approvals.webhook.secret" go together. Fix: set both (the secret signs the body) or neither.`,
        );
      }
    },
    compile: ({ webhook: { url, secret }, ...rest }) => ({
      ...rest,
      webhook: url !== null && secret !== null ? { url, secret } : null,
    }),
  },
);
