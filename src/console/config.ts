/**
 * The `console` section of the config schema: the approver console served
 * under /console/ on the control port (a sidecar's, and `toolgate control`'s):
 * its public URL (links in notifications), OpenID Connect login, the session
 * cookie's key, the tracing UI's link template. Leaf-level: imports only the
 * schema builder.
 */
import { bool, int, isLoopback, path, section, text } from "../shared/config-spec";

export const CONSOLE = section(
  {
    enabled: bool({
      key: "console.enabled",
      env: "TOOLGATE_CONSOLE_ENABLED",
      default: true,
      doc: "Serve the approver console under /console/ on the control port (and on `toolgate control`). It adds no power of its own: every page and action enforces what the API enforces.",
    }),
    publicUrl: text({
      key: "console.public_url",
      env: "TOOLGATE_CONSOLE_PUBLIC_URL",
      pattern: /^https?:\/\/[^\s?#]+$/,
      hint: "an http(s) URL without query or fragment",
      default: null,
      doc: "The console's address as approvers reach it (e.g. `https://toolgate.example.com`): links in notifications point to `<public_url>/console/requests/<id>`, and the OpenID Connect redirect URI is `<public_url>/console/auth/callback`. Unset: the control port's own address.",
    }),
    oidc: {
      issuer: text({
        key: "console.oidc.issuer",
        env: "TOOLGATE_CONSOLE_OIDC_ISSUER",
        pattern: /^https?:\/\/\S+$/,
        hint: "the identity provider's issuer URL",
        default: null,
        doc: "OpenID Connect issuer for console login (authorization code + PKCE, discovered from `<issuer>/.well-known/openid-configuration`). Unset: only the development login (and only while the control port trusts the development key).",
      }),
      clientId: text({
        key: "console.oidc.client_id",
        env: "TOOLGATE_CONSOLE_OIDC_CLIENT_ID",
        pattern: /^\S{1,512}$/,
        hint: "the client id registered at the provider",
        default: "toolgate-console",
        doc: "The console's client id at the identity provider.",
      }),
      clientSecretFile: path({
        key: "console.oidc.client_secret_file",
        env: "TOOLGATE_CONSOLE_OIDC_CLIENT_SECRET_FILE",
        default: null,
        doc: "A file holding the client secret (confidential client). Unset: a public client (PKCE only). Never logged.",
      }),
      rolesClaim: text({
        key: "console.oidc.roles_claim",
        env: "TOOLGATE_CONSOLE_OIDC_ROLES_CLAIM",
        pattern: /^[A-Za-z0-9_:./-]{1,128}$/,
        hint: "a claim name",
        default: "roles",
        doc: "The ID token (or userinfo) claim holding the person's roles (an array of strings): the same roles the control API's tokens carry.",
      }),
      scopes: text({
        key: "console.oidc.scopes",
        env: "TOOLGATE_CONSOLE_OIDC_SCOPES",
        pattern: /^[\x21-\x7e]+( [\x21-\x7e]+)*$/,
        hint: "space-separated scopes",
        default: "openid profile",
        doc: "Scopes asked for at login (`openid` is required).",
      }),
    },
    sessionKeyFile: path({
      key: "console.session_key_file",
      env: "TOOLGATE_CONSOLE_SESSION_KEY_FILE",
      default: null,
      doc: "A file of at least 32 bytes: the key that seals console session cookies (AES-256-GCM). Every replica of `toolgate control` must share it. Unset: a random key per process (sessions end with the process; one replica only).",
    }),
    sessionTtlSeconds: int({
      key: "console.session_ttl_seconds",
      env: "TOOLGATE_CONSOLE_SESSION_TTL_SECONDS",
      min: 60,
      max: 7 * 24 * 3600,
      default: 8 * 3600,
      doc: "How long a console login lasts.",
    }),
    traceUrlTemplate: text({
      key: "console.trace_url_template",
      env: "TOOLGATE_CONSOLE_TRACE_URL_TEMPLATE",
      pattern: /^https?:\/\/\S*\{trace_id\}\S*$/,
      hint: "an http(s) URL containing {trace_id}",
      default: null,
      doc: "Link from a request's timeline to the tracing UI, `{trace_id}` replaced (Jaeger: `http://jaeger:16686/trace/{trace_id}`). Unset: the trace id is shown without a link.",
    }),
  },
  {
    check({ oidc }, { report }) {
      // discovery and the provider's keys decide whose tokens are believed: never over plain http off this host
      if (typeof oidc.issuer === "string" && oidc.issuer.startsWith("http://")) {
        let host = "";
        try {
          host = new URL(oidc.issuer).hostname.replace(/^\[|\]$/g, "");
        } catch {
          host = "";
        }
        if (!isLoopback(host)) {
          report(
            `key "console.oidc.issuer" is ${JSON.stringify(oidc.issuer)}: plain http would let anyone on the path forge logins. Fix: use the provider's https:// issuer (http:// only on loopback, for local tests).`,
          );
        }
      }
      if (typeof oidc.scopes === "string" && !oidc.scopes.split(" ").includes("openid")) {
        report(
          `key "console.oidc.scopes" is ${JSON.stringify(oidc.scopes)}. Fix: include "openid" (OpenID Connect login needs it).`,
        );
      }
    },
    compile: (v) => v,
  },
);
