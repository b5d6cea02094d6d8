/**
 * FleetClient (src/fleet/client.ts) against a protocol peer (./fleet-peer.ts,
 * a stand-in that speaks /fleet/v1 — not the control service): the switch
 * cache from snapshot and changes, the staleness clock, reconnects, hello,
 * and the JSON calls' error handling. Plus the SSE parser and the dev
 * credential.
 */
import { decodeJwt } from "jose";
import { compileConfig } from "../../src/config";
import { FleetClient, SseParser, devCredential, fileCredential } from "../../src/fleet";
import { TokenVerifier } from "../../src/identity";
import { isToolgateError, type ToolgateError } from "../../src/errors";
import { silentLogger } from "../../src/shared/log";
import { until } from "../helpers/bundles";
import { freePort } from "../helpers/net";
import { FakeClock } from "../helpers/units";
import { ProtocolPeer, switchWire } from "./fleet-peer";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const clients: FleetClient[] = [];
const peers: ProtocolPeer[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.stop()));
  await Promise.all(peers.splice(0).map((p) => p.stop()));
});

async function peer(pingEveryMs = 0): Promise<ProtocolPeer> {
  const p = await new ProtocolPeer().start(pingEveryMs);
  peers.push(p);
  return p;
}

function client(
  url: string,
  opts: Partial<ConstructorParameters<typeof FleetClient>[0]> = {},
): FleetClient {
  const c = new FleetClient({
    url,
    agentId: "support-triage",
    maxStalenessSeconds: 10,
    credential: () => Promise.resolve("tok"),
    log: silentLogger,
    version: "0.1.0",
    backoffMs: { first: 20, max: 100 },
    ...opts,
  });
  clients.push(c);
  return c;
}

async function rejection(p: Promise<unknown>): Promise<ToolgateError> {
  try {
    await p;
  } catch (e) {
    if (isToolgateError(e)) return e;
    throw e;
  }
  throw new Error("expected a rejection");
}

describe("the SSE parser", () => {
  test("events split anywhere, CRLF and CR line ends, comments, multi-line data", () => {
    const p = new SseParser();
    const text =
      ': comment\r\nevent: snapshot\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: ping\rdata: x\r\rdata: plain\n\n';
    const out = [];
    for (const ch of text) out.push(...p.feed(ch));
    expect(out).toEqual([
      { event: "snapshot", data: '{"a":\n1}', id: undefined },
      { event: "ping", data: "x", id: undefined },
      { event: "message", data: "plain", id: undefined },
    ]);
  });
  test("an event without data is not dispatched; an id is kept", () => {
    const p = new SseParser();
    expect(p.feed("event: x\n\nid: 7\ndata: y\n\n")).toEqual([
      { event: "message", data: "y", id: "7" },
    ]);
  });
  test("a line or event longer than the bound throws", () => {
    expect(() => new SseParser(100).feed("data: " + "x".repeat(200))).toThrow(/longer than 100/);
    const p = new SseParser(100);
    expect(() => {
      for (let i = 0; i < 20; i++) p.feed("data: xxxxxxxxxx\n");
    }).toThrow(/longer than 100/);
  });
});

describe("FleetClient: the switch cache", () => {
  test("not ready (stale) until the first snapshot; then the snapshot's switches, OK", async () => {
    const p = await peer();
    p.streamMode = "silent";
    p.switches = [switchWire("ks_1", { tool: "refunds.issue" })];
    const c = client(p.url);
    expect(c.status()).toEqual({ state: "NOT_READY", detail: "not started" });
    await c.start();
    await until(() => p.streams.size === 1);
    expect(c.status().state).toBe("NOT_READY");
    expect(c.status().detail).toMatch(/no kill-switch snapshot yet/);
    expect(c.freshness(Date.now())).toMatchObject({ fresh: false, neverSynced: true });
    p.send("snapshot", { seq: 4, switches: p.switches });
    await until(() => c.switches().length === 1);
    expect(c.status()).toEqual({ state: "OK" });
    expect(c.lastSeq()).toBe(4);
    expect(c.switches()[0]).toMatchObject({
      id: "ks_1",
      scope: { tool: "refunds.issue" },
      createdBy: "olga",
      expiresAt: null,
    });
    const stream = p.calls("GET", "/fleet/v1/stream")[0];
    expect(stream?.headers.authorization).toBe("Bearer tok");
    expect(stream?.headers["x-toolgate-instance"]).toBe(c.instance);
    expect(stream?.headers.accept).toBe("text/event-stream");
  });

  test("changes apply in seq order; a replayed seq is ignored; another agent's switch is not kept", async () => {
    const p = await peer();
    const c = client(p.url);
    await c.start();
    await until(() => c.status().state === "OK");
    p.create(switchWire("ks_a", { tool: "refunds.issue" }));
    p.create(switchWire("ks_other", { agent: "another-agent" }));
    const seq = p.create(switchWire("ks_b", {}));
    await until(() => c.lastSeq() === seq);
    expect(c.switches().map((s) => s.id)).toEqual(["ks_a", "ks_b"]);
    // a replay of an old create after its delete changes nothing
    p.remove("ks_a");
    await until(() => c.switches().length === 1);
    p.send("change", { seq: 1, op: "create", switch: switchWire("ks_a", {}) });
    p.ping();
    await new Promise((r) => setTimeout(r, 50));
    expect(c.switches().map((s) => s.id)).toEqual(["ks_b"]);
  });

  test("the staleness clock: ERROR past max_staleness_seconds, fresh again on any event", async () => {
    const clock = new FakeClock(Date.now());
    const p = await peer();
    const c = client(p.url, { now: clock.now, maxStalenessSeconds: 5 });
    await c.start();
    await until(() => c.status().state === "OK");
    clock.advance(5000);
    expect(c.status().state).toBe("OK");
    clock.advance(1500);
    expect(c.status().state).toBe("ERROR");
    expect(c.status().detail).toMatch(
      /kill-switch stream from http:\/\/127\.0\.0\.1:\d+ has been silent for 6\.5 s \(max 5 s\).*containment_stale/,
    );
    expect(c.freshness(clock.ms)).toEqual({ fresh: false, neverSynced: false, silentForMs: 6500 });
    p.ping();
    await until(() => c.status().state === "OK");
  });

  test("a dropped stream reconnects and takes the new snapshot (what changed meanwhile)", async () => {
    const p = await peer();
    const c = client(p.url);
    await c.start();
    await until(() => c.status().state === "OK");
    p.dropStreams();
    p.switches.push(switchWire("ks_while_down", {}));
    p.seq = 9;
    await until(() => c.lastSeq() === 9);
    expect(c.switches().map((s) => s.id)).toEqual(["ks_while_down"]);
    expect(p.calls("GET", "/fleet/v1/stream").length).toBeGreaterThanOrEqual(2);
  });

  test("a malformed snapshot is never used; the stream reconnects", async () => {
    const p = await peer();
    p.streamMode = "garbage";
    const c = client(p.url);
    await c.start();
    await until(() => p.calls("GET", "/fleet/v1/stream").length >= 2);
    expect(c.status().state).toBe("NOT_READY");
    expect(c.status().detail).toMatch(/seq is not a whole number/);
    p.streamMode = "ok";
    await until(() => c.status().state === "OK");
  });

  test("a stream refused (503) or silent past the idle timeout is retried", async () => {
    const p = await peer();
    p.streamMode = "refuse";
    const c = client(p.url, { idleTimeoutMs: 150 });
    await c.start();
    await until(() => p.calls("GET", "/fleet/v1/stream").length >= 2);
    expect(c.status().detail).toMatch(/answered 503/);
    p.streamMode = "silent";
    const n = p.calls("GET", "/fleet/v1/stream").length;
    await until(() => p.calls("GET", "/fleet/v1/stream").length >= n + 2);
    p.streamMode = "ok";
    await until(() => c.status().state === "OK");
  });

  test("hello after each snapshot and when the bundle changes", async () => {
    const p = await peer();
    p.on("POST /fleet/v1/hello", () => ({ status: 200, body: { replica: "r1" } }));
    let bundle = { name: "support-triage", revision: "r1" };
    const c = client(p.url, { bundle: () => bundle });
    await c.start();
    await until(() => p.calls("POST", "/fleet/v1/hello").length === 1);
    expect(p.calls("POST", "/fleet/v1/hello")[0]?.body).toEqual({
      instance: c.instance,
      bundle: { name: "support-triage", revision: "r1" },
      version: "0.1.0",
    });
    p.ping();
    await new Promise((r) => setTimeout(r, 50));
    expect(p.calls("POST", "/fleet/v1/hello")).toHaveLength(1);
    bundle = { name: "support-triage", revision: "r2" };
    p.ping();
    await until(() => p.calls("POST", "/fleet/v1/hello").length === 2);
  });

  test("stop ends the stream and waits", async () => {
    const p = await peer();
    const c = client(p.url);
    await c.start();
    await until(() => c.status().state === "OK");
    await c.stop();
    expect(c.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
    await until(() => p.streams.size === 0);
  });
});

describe("FleetClient: JSON calls", () => {
  const parse = (v: unknown) => v;
  test("an approval refusal keeps its code; anything else is fleet_unavailable", async () => {
    const p = await peer();
    p.on("GET /fleet/v1/access-requests/:id", () => ({
      status: 404,
      body: { code: "approval_not_found", message: "no approval apr_x" },
    }));
    p.on("POST /fleet/v1/access-requests", () => ({
      status: 429,
      body: { code: "access_request_rate_limited", message: "slow down", retry_after: 30 },
    }));
    p.on("POST /fleet/v1/hello", () => ({
      status: 401,
      body: { code: "unauthenticated", message: "bad token" },
    }));
    p.on("POST /fleet/v1/budgets/reserve", () => ({ status: 500, body: "<html>" }));
    const c = client(p.url);
    const nf = await rejection(
      c.call("GET", "/fleet/v1/access-requests/apr_x", undefined, parse, "x"),
    );
    expect([nf.code, nf.message]).toEqual(["approval_not_found", "no approval apr_x"]);
    const rl = await rejection(c.call("POST", "/fleet/v1/access-requests", {}, parse, "x"));
    expect([rl.code, rl.status, rl.details]).toEqual([
      "access_request_rate_limited",
      429,
      { retry_after: 30 },
    ]);
    const un = await rejection(c.call("POST", "/fleet/v1/hello", {}, parse, "hello"));
    expect([un.code, un.message]).toEqual([
      "fleet_unavailable",
      "hello: the control service answered 401 unauthenticated: bad token",
    ]);
    const five = await rejection(c.call("POST", "/fleet/v1/budgets/reserve", {}, parse, "r"));
    expect(five.code).toBe("fleet_unavailable");
  });

  test("a timeout, a dropped connection, an unreachable service, a prototype key: fleet_unavailable", async () => {
    const p = await peer();
    p.on("POST /fleet/v1/rates/lease", () => "hang");
    p.on("POST /fleet/v1/budgets/resolve", () => "drop");
    p.on("POST /fleet/v1/hello", () => ({
      status: 200,
      body: JSON.parse('{"replica": {"__proto__": {"x": 1}}}') as unknown,
    }));
    const c = client(p.url, { callTimeoutMs: 150 });
    const slow = await rejection(c.call("POST", "/fleet/v1/rates/lease", {}, parse, "rate lease"));
    expect(slow.message).toMatch(
      /^rate lease: http:\/\/127.0.0.1:\d+ unreachable: no answer within 150 ms$/,
    );
    expect(
      (await rejection(c.call("POST", "/fleet/v1/budgets/resolve", {}, parse, "r"))).code,
    ).toBe("fleet_unavailable");
    const proto = await rejection(c.call("POST", "/fleet/v1/hello", {}, parse, "hello"));
    expect(proto.message).toMatch(/forbidden key "__proto__"/);
    const gone = client(`http://127.0.0.1:${await freePort()}`);
    const down = await rejection(gone.call("GET", "/fleet/v1/x", undefined, parse, "x"));
    expect(down.code).toBe("fleet_unavailable");
    expect(down.message).toMatch(/unreachable: fetch failed: ECONNREFUSED/);
  });

  test("a call's timeout ends with the call: its signal never fires afterwards", async () => {
    const p = await peer();
    p.on("POST /fleet/v1/budgets/reserve", () => ({ status: 200, body: { ok: true } }));
    const signals: AbortSignal[] = [];
    const fetchFn: typeof fetch = (url, init) => {
      if (init?.signal) signals.push(init.signal);
      return fetch(url, init);
    };
    const c = client(p.url, { callTimeoutMs: 100, fetch: fetchFn });
    expect(await c.call("POST", "/fleet/v1/budgets/reserve", {}, parse, "r")).toEqual({ ok: true });
    await new Promise((r) => setTimeout(r, 200));
    expect(signals).toHaveLength(1);
    expect(signals[0]?.aborted).toBe(false);
  });

  test("what parse refuses is fleet_unavailable, never used", async () => {
    const p = await peer();
    p.on("POST /fleet/v1/hello", () => ({ status: 200, body: { replica: 42 } }));
    const c = client(p.url);
    const e = await rejection(
      c.call(
        "POST",
        "/fleet/v1/hello",
        {},
        (v) => {
          if (typeof (v as { replica?: unknown }).replica !== "string")
            throw new Error("no replica");
          return v;
        },
        "hello",
      ),
    );
    expect(e.message).toBe("hello: the control service's answer is malformed: no replica");
  });
});

describe("the sidecar's credential", () => {
  test("development: a JWT the control service's fleet.jwt (dev key) verifies, bound to the agent, re-minted before expiry", async () => {
    const config = compileConfig({}, { TOOLGATE_FLEET_URL: "http://127.0.0.1:8182" });
    const clock = new FakeClock(Date.now());
    const cred = devCredential({
      agentId: config.agent.id,
      issuer: config.fleet.jwt.issuer,
      audience: config.fleet.jwt.audience,
      agentClaim: config.fleet.jwt.agentClaim,
      now: clock.now,
    });
    const token = await cred();
    const verifier = await TokenVerifier.create(
      { ...config.fleet.jwt, jobClaim: null },
      {
        hostKey: "control.host",
        host: "127.0.0.1",
      },
    );
    const who = await verifier.verify(token);
    expect(who.id).toBe(`agent:${config.agent.id}`);
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({
      iss: "toolgate-dev",
      aud: "toolgate-fleet",
      toolgate_agent: config.agent.id,
    });
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(300);
    expect(await cred()).toBe(token);
    clock.advance(241_000);
    expect(await cred()).not.toBe(token);
  });

  test("a nested agent claim path builds nested claims", async () => {
    const cred = devCredential({
      agentId: "a1",
      issuer: "toolgate-dev",
      audience: "toolgate-fleet",
      agentClaim: "kubernetes.io/serviceaccount/name",
    });
    expect(decodeJwt(await cred())).toMatchObject({
      "kubernetes.io": { serviceaccount: { name: "a1" } },
    });
  });

  test("a credential file is read again at every call (rotation)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "toolgate-fleet-cred-"));
    const file = join(dir, "token");
    writeFileSync(file, "one\n");
    const cred = fileCredential(file);
    expect(await cred()).toBe("one");
    writeFileSync(file, "two");
    expect(await cred()).toBe("two");
    writeFileSync(file, "  ");
    await expect(cred()).rejects.toThrow(/holds no token/);
    await expect(fileCredential(join(dir, "missing"))()).rejects.toThrow(/cannot read/);
  });
});
