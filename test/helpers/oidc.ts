/**
 * A REAL local OpenID Connect provider for the console's tests: npm
 * `oidc-provider` (ESM-only, loaded with a dynamic import; jest runs with
 * --experimental-vm-modules) on a loopback port. One public client,
 * `toolgate-console` (authorization code + PKCE, no secret), a `roles` claim
 * in the ID token, and a minimal login interaction of its own: GET
 * /interaction/<uid> answers a form (label "Username", button "Sign in"),
 * POST /interaction/<uid>/login with `login=<user>` logs that person in —
 * no password: the test (or the browser) names the user. Consent is granted
 * automatically (a first-party client).
 *
 *   const idp = await startTestOidc({ users: { maria: ["support_manager"] } });
 *   // start toolgate with TOOLGATE_CONSOLE_OIDC_ISSUER: idp.issuer, then:
 *   idp.allowRedirect(`${controlUrl}/console/auth/callback`);
 */
import { generateKeyPairSync } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface TestOidc {
  issuer: string;
  /** Registers the client's redirect URI (the provider is built on the first call). */
  allowRedirect(uri: string): Promise<void>;
  /** Sets (or changes) a person's roles. */
  setUser(id: string, roles: string[]): void;
  stop(): Promise<void>;
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => {
      data += c;
      if (data.length > 65536) req.destroy();
    });
    req.on("end", () => resolve(data));
    req.on("error", reject);
  });
}

/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-member-access */
export async function startTestOidc(
  opts: { users?: Record<string, string[]>; clientId?: string } = {},
): Promise<TestOidc> {
  const users = new Map<string, string[]>(Object.entries(opts.users ?? {}));
  const clientId = opts.clientId ?? "toolgate-console";
  const name = "oidc-provider"; // no type declarations ship with it
  const { default: Provider } = (await import(name)) as { default: any };
  let provider: any;
  let callback: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const redirects: string[] = [];

  const page = (res: ServerResponse, status: number, body: string) => {
    res.writeHead(status, {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
    });
    res.end(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test IdP</title></head><body><main>${body}</main></body></html>`,
    );
  };

  const interaction = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const details = await provider.interactionDetails(req, res);
    const uid: string = details.uid;
    if (details.prompt.name !== "login") {
      // consent for the first-party client: grant what was asked
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({
            accountId: details.session.accountId,
            clientId: details.params.client_id,
          });
      if (typeof details.params.scope === "string") grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      await provider.interactionFinished(
        req,
        res,
        { consent: { grantId } },
        { mergeWithLastSubmission: true },
      );
      return;
    }
    if (req.method === "POST" && (req.url ?? "").endsWith("/login")) {
      const login = new URLSearchParams(await readBody(req)).get("login") ?? "";
      if (!users.has(login)) {
        page(res, 401, `<h1>Sign in</h1><p role="alert">Unknown user.</p>${form(uid)}`);
        return;
      }
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: login } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    page(res, 200, `<h1>Sign in to the test provider</h1>${form(uid)}`);
  };
  const form = (uid: string) =>
    `<form method="post" action="/interaction/${esc(uid)}/login"><label for="login">Username</label> <input id="login" name="login" autocomplete="username"> <button type="submit">Sign in</button></form>`;

  const server: Server = createServer((req, res) => {
    if (callback === undefined) {
      res.writeHead(503).end("no client registered yet");
      return;
    }
    if ((req.url ?? "").startsWith("/interaction/")) {
      interaction(req, res).catch((e: unknown) => {
        if (!res.headersSent) page(res, 400, `<p>${esc((e as Error).message)}</p>`);
      });
      return;
    }
    callback(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  // the provider's signing key (RS256), generated per run
  const signingKey = {
    ...generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" }),
    kid: "test-oidc",
    alg: "RS256",
    use: "sig",
  };
  const build = () => {
    // its one remaining warning (the in-memory adapter: exactly what a test wants) is not printed
    const warn = console.warn;
    console.warn = () => undefined;
    try {
      construct();
    } finally {
      console.warn = warn;
    }
  };
  const construct = () => {
    provider = new Provider(issuer, {
      jwks: { keys: [signingKey] },
      clients: [
        {
          client_id: clientId,
          token_endpoint_auth_method: "none",
          redirect_uris: [...redirects],
          grant_types: ["authorization_code"],
          response_types: ["code"],
        },
      ],
      claims: { openid: ["sub", "roles"], profile: ["name"] },
      conformIdTokenClaims: false,
      pkce: { required: () => true },
      features: { devInteractions: { enabled: false } },
      cookies: { keys: ["test-oidc-cookie-key-0123456789"] },
      interactions: { url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}` },
      findAccount: (_ctx: unknown, id: string) => {
        const roles = users.get(id);
        if (roles === undefined) return undefined;
        return { accountId: id, claims: () => ({ sub: id, name: id, roles: [...roles] }) };
      },
      ttl: {
        Session: 3600,
        Interaction: 600,
        Grant: 3600,
        AccessToken: 600,
        IdToken: 600,
        AuthorizationCode: 60,
      },
    });
    // quiet: the provider's own error events are the tests' business
    provider.on("server_error", () => undefined);
    callback = provider.callback();
  };

  return {
    issuer,
    allowRedirect: (uri: string) => {
      if (!redirects.includes(uri)) redirects.push(uri);
      build();
      return Promise.resolve();
    },
    setUser: (id, roles) => {
      users.set(id, roles);
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
