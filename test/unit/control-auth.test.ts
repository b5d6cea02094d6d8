/**
 * The control service's sidecar credentials (src/control/auth.ts) over the
 * real TokenVerifier (src/identity/jwt.ts), whose cache of verified tokens
 * makes a repeated credential cost a map lookup instead of an ES256 verify:
 * a cached token never outlives its exp (+ the configured skew), a token
 * refused is never cached, and the cache is bounded.
 */
import { readFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { importPKCS8, SignJWT, type CryptoKey } from "jose";
import { compileConfig } from "../../src/config";
import { SidecarCredentials } from "../../src/control";
import { isToolgateError } from "../../src/errors";
import { TokenVerifier } from "../../src/identity";
import { devPrivateKeyPath } from "../../src/shared/paths";

jest.setTimeout(60_000);

const config = compileConfig({}, { TOOLGATE_FLEET_URL: "http://127.0.0.1:8182" });
const jwt = { ...config.fleet.jwt, jobClaim: null };
const SKEW_MS = jwt.clockSkewSeconds * 1000;
let key: CryptoKey;

beforeAll(async () => {
  key = await importPKCS8(readFileSync(devPrivateKeyPath(), "utf8"), "ES256");
});

afterEach(() => {
  jest.useRealTimers();
});

async function verifier(): Promise<TokenVerifier> {
  return TokenVerifier.create(jwt, { hostKey: "control.host", host: "127.0.0.1" });
}

interface TokenOpts {
  agent?: string | null;
  expS?: number;
  nbfS?: number;
  audience?: string;
}

async function token(o: TokenOpts = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims = o.agent === null ? {} : { toolgate_agent: o.agent ?? "agent-a" };
  const t = new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(jwt.issuer)
    .setAudience(o.audience ?? jwt.audience)
    .setSubject("agent:x")
    .setIssuedAt(now)
    .setExpirationTime(o.expS ?? now + 300);
  if (o.nbfS !== undefined) t.setNotBefore(o.nbfS);
  return t.sign(key);
}

const req = (t: string): IncomingMessage =>
  ({ headers: { authorization: `Bearer ${t}` } }) as unknown as IncomingMessage;

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isToolgateError(e)) return `${e.code}: ${e.message}`;
    throw e;
  }
  return "accepted";
}

/** Date (what jose and the cache read) under the test's control; promises and I/O run as usual. */
function clockAt(ms: number): void {
  jest.useFakeTimers({ now: ms, doNotFake: ["nextTick", "setImmediate", "queueMicrotask"] });
}

describe("SidecarCredentials and the verified-token cache", () => {
  test("a cached credential is refused once past its exp (+ skew): the cache never outlives exp", async () => {
    const start = Date.now();
    const exp = Math.floor(start / 1000) + 60;
    const t = await token({ expS: exp });
    const creds = new SidecarCredentials(await verifier(), jwt.agentClaim);
    clockAt(start);
    expect((await creds.verify(req(t))).id).toBe("agent-a");
    // within exp + skew: served (from the cache)
    jest.setSystemTime(exp * 1000 + SKEW_MS - 1000);
    expect((await creds.verify(req(t))).id).toBe("agent-a");
    // past it: refused, as an uncached token would be, and stays refused
    jest.setSystemTime(exp * 1000 + SKEW_MS + 1000);
    expect(await refusal(creds.verify(req(t)))).toMatch(/^unauthenticated: .*expired/);
    expect(await refusal(creds.verify(req(t)))).toMatch(/^unauthenticated: .*expired/);
  });

  test("a token refused is never cached: not yet valid, then valid; another audience; a bad signature", async () => {
    const now = Date.now();
    const nbf = Math.floor(now / 1000) + 120;
    const early = await token({ nbfS: nbf });
    const creds = new SidecarCredentials(await verifier(), jwt.agentClaim);
    clockAt(now);
    expect(await refusal(creds.verify(req(early)))).toMatch(/^unauthenticated/);
    jest.setSystemTime(nbf * 1000 + SKEW_MS + 1000);
    expect((await creds.verify(req(early))).id).toBe("agent-a");
    jest.useRealTimers();

    const human = await token({ audience: "toolgate-control" });
    expect(await refusal(creds.verify(req(human)))).toMatch(/^unauthenticated/);
    expect(await refusal(creds.verify(req(human)))).toMatch(/^unauthenticated/);

    const good = await token();
    const [h, p] = good.split(".");
    const forged = `${h}.${p}.${(await token({ agent: "agent-b" })).split(".")[2]}`;
    expect(await refusal(creds.verify(req(forged)))).toMatch(/bad signature/);
    expect((await creds.verify(req(good))).id).toBe("agent-a");
    expect(await refusal(creds.verify(req(forged)))).toMatch(/bad signature/);
  });

  test("a verified token without the agent claim is refused every time (cached or not)", async () => {
    const creds = new SidecarCredentials(await verifier(), jwt.agentClaim);
    const t = await token({ agent: null });
    for (let i = 0; i < 2; i++)
      expect(await refusal(creds.verify(req(t)))).toMatch(/names no agent/);
  });

  test("the cache is bounded (10 000 tokens; the oldest goes) and an evicted token is verified again", async () => {
    const v = await verifier();
    const cache = (v as unknown as { cache: Map<string, unknown> }).cache;
    const first = await token({ agent: "agent-0" });
    await v.verify(first);
    const base = Math.floor(Date.now() / 1000) + 300;
    for (let i = 1; i <= 10_000; i++) {
      // distinct tokens: the exp differs
      await v.verify(await token({ agent: `agent-${i}`, expS: base + i }));
      expect(cache.size).toBeLessThanOrEqual(10_000);
    }
    expect(cache.size).toBe(10_000);
    expect(cache.has(first)).toBe(false);
    expect((await v.verify(first)).id).toBe("agent:x");
    expect(cache.has(first)).toBe(true);
    expect(cache.size).toBe(10_000);
  });
});
