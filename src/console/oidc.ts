/**
 * Console login with OpenID Connect: authorization code + PKCE (S256), a
 * state and a nonce, via `openid-client` v6. openid-client is ESM-only; on
 * Node ≥ 20.19 `require` loads it (what TypeScript's CommonJS output of the
 * dynamic import below becomes), in dist/ and under jest alike.
 *
 * Everything the provider answers is checked by openid-client (issuer,
 * audience, signature, nonce, state, PKCE); the roles come from the ID
 * token's `roles_claim`, else from userinfo; anything but an array of
 * strings there is no roles at all.
 */
import { readFileSync } from "node:fs";
import type * as OidcClient from "openid-client";
import { toolgateError } from "../errors";
import type { LoginState } from "./session";

export interface OidcSettings {
  issuer: string;
  clientId: string;
  clientSecretFile: string | null;
  scopes: string;
  rolesClaim: string;
}

/** Who logged in. */
export interface OidcIdentity {
  sub: string;
  roles: string[];
  iss: string;
}

/** How long a login may take between start and callback. */
export const LOGIN_TTL_SECONDS = 600;

type Client = typeof OidcClient;
let loaded: Promise<Client> | undefined;
const client = (): Promise<Client> => (loaded ??= import("openid-client"));

function rolesFrom(v: unknown): string[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const roles = v.filter(
    (r): r is string => typeof r === "string" && r.length > 0 && r.length <= 256,
  );
  return roles.slice(0, 256);
}

export class OidcLogin {
  private config: Promise<OidcClient.Configuration> | undefined;
  private readonly secret: string | undefined;

  constructor(private readonly settings: OidcSettings) {
    if (settings.clientSecretFile !== null) {
      try {
        this.secret = readFileSync(settings.clientSecretFile, "utf8").trim();
      } catch (e) {
        throw toolgateError(
          "config_invalid",
          `console.oidc.client_secret_file ${settings.clientSecretFile} cannot be read: ${(e as Error).message}`,
        );
      }
    }
  }

  /** The provider's configuration, discovered once (again after a failure). */
  private discover(): Promise<OidcClient.Configuration> {
    if (this.config === undefined) {
      const p = (async () => {
        const c = await client();
        const issuer = new URL(this.settings.issuer);
        const insecure = issuer.protocol === "http:";
        return c.discovery(
          issuer,
          this.settings.clientId,
          this.secret !== undefined ? { client_secret: this.secret } : {},
          this.secret !== undefined ? c.ClientSecretPost(this.secret) : c.None(),
          {
            timeout: 10,
            ...(insecure ? { execute: [c.allowInsecureRequests] } : {}),
          },
        );
      })();
      this.config = p;
      p.catch(() => {
        if (this.config === p) this.config = undefined;
      });
    }
    return this.config;
  }

  /** The provider's authorization URL and what the callback must check. */
  async start(redirectUri: string, nowS: number): Promise<{ url: string; state: LoginState }> {
    const c = await client();
    const config = await this.discover().catch((e: unknown) => {
      throw new Error(`the identity provider cannot be reached: ${(e as Error).message}`);
    });
    const verifier = c.randomPKCECodeVerifier();
    const state = c.randomState();
    const nonce = c.randomNonce();
    const url = c.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: this.settings.scopes,
      response_type: "code",
      code_challenge: await c.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    return { url: url.href, state: { state, nonce, verifier, exp: nowS + LOGIN_TTL_SECONDS } };
  }

  /** The code exchanged and the ID token checked; who logged in. */
  async callback(redirectUri: string, query: string, st: LoginState): Promise<OidcIdentity> {
    const c = await client();
    const config = await this.discover();
    const current = new URL(redirectUri);
    current.search = query;
    const tokens = await c.authorizationCodeGrant(config, current, {
      pkceCodeVerifier: st.verifier,
      expectedState: st.state,
      expectedNonce: st.nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    if (claims === undefined) throw new Error("no ID token");
    const sub = claims.sub;
    let roles = rolesFrom(claims[this.settings.rolesClaim]);
    if (roles === undefined && typeof tokens.access_token === "string") {
      try {
        const info = await c.fetchUserInfo(config, tokens.access_token, sub);
        roles = rolesFrom(info[this.settings.rolesClaim]);
      } catch {
        roles = undefined;
      }
    }
    return { sub, roles: roles ?? [], iss: claims.iss };
  }
}
