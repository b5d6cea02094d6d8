/**
 * Issue #13, item 10: the bundle HTTP client and redirects. Real servers on
 * loopback (plain HTTP, and HTTPS with a self-signed certificate made by the
 * real `openssl`, trusted through policy.http.ca_file), a real toolgate
 * polling them with a bearer token from a file.
 */
import { readFileSync, writeFileSync } from "node:fs";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import type { BundleStatus } from "../../src/bundles";
import { redirectTarget } from "../../src/bundles/sources";
import { ToolgateError } from "../../src/errors";
import { fixtureBundle, until } from "../helpers/bundles";
import { tempDir } from "../helpers/opa";
import { startTestToolgate } from "../helpers/toolgate";
import { selfSigned } from "../helpers/tls";

jest.setTimeout(60_000);

const TOKEN = "s3cret-bundle-token";
const status = (tg: Toolgate): BundleStatus => tg.bundles.status();

/** A loopback server that records each request's headers and answers with `handle`. */
class Recorder {
  seen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  private server: Server | undefined;
  constructor(
    private readonly handle: (req: IncomingMessage, res: ServerResponse) => void,
    private readonly tls?: { key: Buffer; cert: Buffer },
  ) {}
  async start(host = "127.0.0.1"): Promise<string> {
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      this.seen.push({ url: req.url ?? "", headers: req.headers });
      this.handle(req, res);
    };
    this.server = this.tls ? createHttpsServer(this.tls, onRequest) : createServer(onRequest);
    await new Promise<void>((r) => (this.server as Server).listen(0, host, r));
    const port = (this.server.address() as AddressInfo).port;
    return `${this.tls ? "https" : "http"}://${host}:${port}`;
  }
  async stop(): Promise<void> {
    const s = this.server;
    if (s === undefined) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

const bundleBytes = readFileSync(fixtureBundle("redirect-1"));
const serveBundle = (_req: IncomingMessage, res: ServerResponse): void => {
  res.writeHead(200, { "content-type": "application/gzip", etag: '"r1"' }).end(bundleBytes);
};
const redirectTo =
  (target: () => string, status = 302) =>
  (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(status, { location: target() + (req.url ?? "/") }).end();
  };

function env(url: string, extra: Record<string, string> = {}): Record<string, string> {
  const dir = tempDir("toolgate-redirect-");
  writeFileSync(join(dir, "token"), `${TOKEN}\n`);
  return {
    TOOLGATE_POLICY_SOURCE: "http",
    TOOLGATE_POLICY_HTTP_URL: `${url}/bundles/fixture.tar.gz`,
    TOOLGATE_POLICY_HTTP_BEARER_TOKEN_FILE: join(dir, "token"),
    TOOLGATE_POLICY_HTTP_MIN_DELAY_SECONDS: "1",
    TOOLGATE_POLICY_HTTP_MAX_DELAY_SECONDS: "1",
    TOOLGATE_POLICY_HTTP_TIMEOUT_MS: "3000",
    ...extra,
  };
}

test.each([
  ["another port on the same address", "127.0.0.1"],
  ["another loopback address", "127.0.0.2"],
])(
  "a redirect to %s (another origin) does not carry the bearer token; the bundle still activates",
  async (_what, hostB) => {
    const b = new Recorder(serveBundle);
    const bUrl = await b.start(hostB);
    const a = new Recorder(redirectTo(() => bUrl));
    const aUrl = await a.start("127.0.0.1");
    const tg = await startTestToolgate(env(aUrl));
    try {
      expect(status(tg)).toMatchObject({ state: "OK", revision: "redirect-1", last_error: null });
      expect(a.seen[0]?.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(b.seen.length).toBeGreaterThan(0);
      for (const r of b.seen) expect(r.headers.authorization).toBeUndefined();
    } finally {
      await tg.stop();
      await a.stop();
      await b.stop();
    }
  },
);

test("a redirect within the origin keeps the bearer token (it is the same server)", async () => {
  const server: Recorder = new Recorder((req, res) => {
    if (req.url?.startsWith("/moved/")) serveBundle(req, res);
    else res.writeHead(307, { location: `/moved${req.url ?? ""}` }).end();
  });
  const url = await server.start();
  const tg = await startTestToolgate(env(url));
  try {
    expect(status(tg)).toMatchObject({ state: "OK", revision: "redirect-1" });
    const moved = server.seen.filter((r) => r.url.startsWith("/moved/"));
    expect(moved.length).toBeGreaterThan(0);
    for (const r of moved) expect(r.headers.authorization).toBe(`Bearer ${TOKEN}`);
  } finally {
    await tg.stop();
    await server.stop();
  }
});

test("a token dropped on the way out is not sent again when a later redirect comes back", async () => {
  let aUrl = "";
  const b = new Recorder(redirectTo(() => aUrl + "/back"));
  const bUrl = await b.start("127.0.0.1");
  const a = new Recorder((req, res) => {
    if (req.url?.startsWith("/back/")) serveBundle(req, res);
    else redirectTo(() => bUrl)(req, res);
  });
  aUrl = await a.start("127.0.0.1");
  const tg = await startTestToolgate(env(aUrl));
  try {
    expect(status(tg)).toMatchObject({ state: "OK", revision: "redirect-1" });
    const back = a.seen.filter((r) => r.url.startsWith("/back/"));
    expect(back.length).toBeGreaterThan(0);
    for (const r of [...b.seen, ...back]) expect(r.headers.authorization).toBeUndefined();
  } finally {
    await tg.stop();
    await a.stop();
    await b.stop();
  }
});

test("https → http: the downgrade is refused (bundle_download_failed); the http server is never asked", async () => {
  const tls = selfSigned();
  const plain = new Recorder(serveBundle);
  const plainUrl = await plain.start("127.0.0.1");
  const secure = new Recorder(
    redirectTo(() => plainUrl),
    tls,
  );
  const secureUrl = await secure.start("127.0.0.1");
  const tg = await startTestToolgate(env(secureUrl, { TOOLGATE_POLICY_HTTP_CA_FILE: tls.caFile }));
  try {
    expect(secure.seen.length).toBeGreaterThan(0); // TLS with ca_file works: the redirect was read
    expect(status(tg)).toMatchObject({ state: "ERROR", revision: null });
    expect(status(tg).last_error?.code).toBe("bundle_download_failed");
    expect(status(tg).last_error?.message).toMatch(/redirect from https to http:\/\/.* refused/);
    expect(plain.seen).toEqual([]);
    // still refused on the next polls
    await until(() => secure.seen.length >= 2);
    expect(plain.seen).toEqual([]);
  } finally {
    await tg.stop();
    await secure.stop();
    await plain.stop();
  }
});

describe("the redirect decision", () => {
  const headers = { authorization: "Bearer t", accept: "*/*", "if-none-match": '"e"' };
  const decide = (from: string, to: string) => redirectTarget(new URL(from), to, headers);

  test("same origin: everything is kept", () => {
    expect(decide("https://h:8443/a", "/b")).toEqual({
      url: "https://h:8443/b",
      headers,
    });
  });
  test.each([
    ["another host", "https://h/a", "https://other/a"],
    ["another port", "https://h/a", "https://h:444/a"],
    ["http to https (an upgrade, another origin)", "http://h/a", "https://h/a"],
  ])("%s: credentials are dropped", (_w, from, to) => {
    const r = decide(from, to);
    expect(r.headers).toEqual({ accept: "*/*", "if-none-match": '"e"' });
  });
  test("credentials are dropped whatever the header's case; the host's case is no other origin", () => {
    const mixed = {
      Authorization: "Bearer t",
      "Proxy-Authorization": "Basic x",
      Cookie: "c=1",
      accept: "*/*",
    };
    expect(redirectTarget(new URL("http://h/a"), "http://other/a", mixed).headers).toEqual({
      accept: "*/*",
    });
    expect(redirectTarget(new URL("http://h/a"), "http://H/b", mixed).headers).toEqual(mixed);
  });
  test.each([
    ["https → http", "https://h/a", "http://h/a"],
    ["https → http elsewhere", "https://h/a", "http://other/a"],
    ["to another scheme", "https://h/a", "file:///etc/passwd"],
  ])("%s is refused", (_w, from, to) => {
    expect(() => decide(from, to)).toThrow(ToolgateError);
    try {
      decide(from, to);
    } catch (e) {
      expect((e as ToolgateError).code).toBe("bundle_download_failed");
    }
  });
});
