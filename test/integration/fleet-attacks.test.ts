/**
 * Attacks on `toolgate control` (real PostgreSQL, a fresh database; a real
 * replica on loopback; real dev-key-signed credentials): what a sidecar
 * credential of one agent can do to the service and to other agents.
 */
import { mkdtempSync } from "node:fs";
import { connect, createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";
import { freePort } from "../helpers/net";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { token } from "../helpers/tokens";

jest.setTimeout(60_000);

async function startReplica(
  url: string,
  streamLimits?: { perAgent?: number; total?: number },
): Promise<ControlService> {
  const stateDir = mkdtempSync(join(tmpdir(), "toolgate-control-attacks-"));
  const config = compileConfig(
    {},
    {
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: stateDir,
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      TOOLGATE_POSTGRES_URL: url,
    },
  );
  return startControlService(config, {
    log: silentLogger,
    env: { OTEL_SDK_DISABLED: "true" },
    replica: `attacks-${Math.random().toString(36).slice(2, 8)}`,
    pingMs: 250,
    ...(streamLimits !== undefined ? { streamLimits } : {}),
  });
}

/** A sidecar credential of `agent`, as a dev-mode sidecar mints it. */
function sidecar(agent: string): Promise<string> {
  return token(`agent:${agent}`, {
    audience: "toolgate-fleet",
    claims: { toolgate_agent: agent },
  });
}

interface OpenStream {
  status: number;
  body: string;
  close(): void;
}

/** Opens /fleet/v1/stream; for a 200 the body is left streaming (close() ends it). */
async function openStream(base: string, credential: string): Promise<OpenStream> {
  const abort = new AbortController();
  const res = await fetch(new URL("/fleet/v1/stream", base), {
    headers: { authorization: `Bearer ${credential}`, "x-toolgate-instance": "sc-x" },
    signal: abort.signal,
  });
  if (res.status !== 200) {
    const body = await res.text();
    return { status: res.status, body, close: () => abort.abort() };
  }
  // read the snapshot so the stream is surely registered
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const { value } = await reader.read();
  const body = new TextDecoder().decode(value);
  void (async () => {
    try {
      for (;;) if ((await reader.read()).done) return;
    } catch {
      // aborted
    }
  })();
  return { status: 200, body, close: () => abort.abort() };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** An access request of a sidecar of `agent` whose evaluation binds `members` of the context. */
function submission(agent: string, members: string[]): Record<string, unknown> {
  const request = {
    subject: { type: "user", id: "alice" },
    action: { name: "refund.create", properties: { arguments: { amount: 40 } } },
    resource: { type: "order", id: "o-1" },
    context: { job: { id: "job-1" } },
  };
  const evaluation = {
    evaluation_id: randomUUID(),
    decision_id: randomUUID(),
    agent_id: agent,
    binding_hash: "x".repeat(43),
    binding_context_members: members,
    redacted_request: request,
    requirement: {
      approver_roles: ["support_manager"],
      single_use: true,
      ttl_seconds: 600,
      exclude: [],
    },
    reasons: ["refund_needs_approval"],
    initiator: "alice",
    tool: "refund.create",
    policy_revision: "rev-1",
    created_at: new Date().toISOString(),
    expires_at: new Date(Date.now() + 300_000).toISOString(),
  };
  return {
    evaluation,
    request: { ...request, denial: { evaluation_id: evaluation.evaluation_id } },
    idempotency_key: null,
    requester: "alice",
  };
}

/** One raw HTTP/1.1 request (any request target, as an attacker writes it); the status code. */
function rawStatus(base: string, method: string, target: string, bearer: string): Promise<number> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = createConnection(Number(u.port), u.hostname);
    let text = "";
    sock.on("data", (d) => {
      text += d.toString("latin1");
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (m) {
        sock.destroy();
        resolve(Number(m[1]));
      }
    });
    sock.on("error", reject);
    sock.write(
      `${method} ${target} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${bearer}\r\n` +
        "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
  });
}

describe("toolgate control under attack (a sidecar credential)", () => {
  let db: FreshDatabase;
  let svc: ControlService;
  const open: OpenStream[] = [];

  beforeAll(async () => {
    db = await freshDatabase();
    svc = await startReplica(db.url, { perAgent: 2, total: 3 });
  });
  afterAll(async () => {
    for (const s of open) s.close();
    await svc?.stop();
    await db?.drop();
  });

  test("an evaluation binding the profile's machinery (context.reason …) is bad input (400), not the control service's configuration failing (500 config_invalid, logged as an error)", async () => {
    const a = await sidecar("agent-a");
    for (const m of ["reason", "access_request", "evaluation_id", "evaluated_at"]) {
      const res = await fetch(new URL("/fleet/v1/access-requests", svc.url), {
        method: "POST",
        headers: { authorization: `Bearer ${a}`, "content-type": "application/json" },
        body: JSON.stringify(submission("agent-a", ["job", m])),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe("invalid_request");
    }
    // a binding of the default members still passes the schema (and is judged on its hash)
    const ok = submission("agent-a", ["job"]);
    const res = await fetch(new URL("/fleet/v1/access-requests", svc.url), {
      method: "POST",
      headers: { authorization: `Bearer ${a}`, "content-type": "application/json" },
      body: JSON.stringify(ok),
    });
    expect(((await res.json()) as { code: string }).code).toBe("invalid_denial_binding");
  });

  test("path tricks: a person's token never reaches the sidecar API, a sidecar credential never the human API (case, absolute-form targets, dot segments, double slashes, encoded slashes)", async () => {
    const person = await token("mallory", { audience: "toolgate-control" });
    const bot = await sidecar("mallory");
    const host = new URL(svc.url).host;
    const reached: string[] = [];
    const probe = async (method: string, target: string, bearer: string) => {
      const status = await rawStatus(svc.url, method, target, bearer);
      if (status !== 401 && status !== 404) reached.push(`${method} ${target} → ${status}`);
    };
    for (const target of [
      "/fleet/v1/access-requests/x",
      "/FLEET/v1/access-requests/x",
      "/Fleet/V1/Access-Requests/x",
      `http://${host}/fleet/v1/access-requests/x`,
      `HTTP://${host}/FLEET/v1/access-requests/x`,
      "/v1/../fleet/v1/access-requests/x",
      "//fleet/v1/access-requests/x",
      "/fleet%2Fv1/access-requests/x",
      "/%66leet/v1/access-requests/x",
    ]) {
      await probe("GET", target, person);
      await probe("POST", `${target}/cancel`, person);
    }
    for (const target of [
      "/v1/approvals",
      "/V1/APPROVALS",
      `http://${host}/v1/approvals`,
      "/fleet/../v1/approvals",
      "/fleet/v1/../../v1/approvals",
      "//v1/approvals",
      "/v1/fleet/sidecars",
      "/V1/FLEET/SIDECARS",
      "/v1/status",
    ]) {
      await probe("GET", target, bot);
    }
    expect(reached).toEqual([]);
    // the probe is sound: each credential works where it belongs
    expect(await rawStatus(svc.url, "GET", "/v1/status", person)).toBe(200);
    expect(await rawStatus(svc.url, "GET", "/fleet/v1/access-requests/x", bot)).toBe(404);
    expect(await rawStatus(svc.url, "POST", "/fleet/v1/hello", bot)).toBe(400);
  });

  test("a hello's instance is printable ASCII, as the stream's X-Toolgate-Instance (no control characters into the sidecars view or a log)", async () => {
    const a = await sidecar("agent-a");
    const hello = (instance: string) =>
      fetch(new URL("/fleet/v1/hello", svc.url), {
        method: "POST",
        headers: { authorization: `Bearer ${a}`, "content-type": "application/json" },
        body: JSON.stringify({ instance, bundle: null, version: null }),
      });
    for (const bad of ["sc\nFAKE LOG LINE", "sc\u001b[31m", "sc 1", "sc\u00e9"]) {
      const res = await hello(bad);
      expect(res.status).toBe(400);
    }
    expect((await hello("sc_ok-1")).status).toBe(200);
  });

  test("one agent's credential cannot hold unbounded kill-switch streams (sockets, memory, snapshot reads): 429 fleet_stream_limit past its share, other agents keep theirs", async () => {
    const a = await sidecar("agent-a");
    const b = await sidecar("agent-b");
    const c = await sidecar("agent-c");
    const a1 = await openStream(svc.url, a);
    const a2 = await openStream(svc.url, a);
    open.push(a1, a2);
    expect([a1.status, a2.status]).toEqual([200, 200]);
    expect(a1.body).toContain("event: snapshot");
    const a3 = await openStream(svc.url, a);
    open.push(a3);
    expect(a3.status).toBe(429);
    expect(JSON.parse(a3.body)).toMatchObject({ code: "fleet_stream_limit" });
    // another agent still gets its stream …
    const b1 = await openStream(svc.url, b);
    open.push(b1);
    expect(b1.status).toBe(200);
    // … until the replica's total is reached
    const c1 = await openStream(svc.url, c);
    open.push(c1);
    expect(c1.status).toBe(429);
    // a stream that ends gives its place back
    a1.close();
    await until(
      () => svc.lifecycle.status().components.switch_stream?.detail?.startsWith("2 ") === true,
    );
    const a4 = await openStream(svc.url, a);
    open.push(a4);
    expect(a4.status).toBe(200);
  });
});

/**
 * A TCP proxy in front of PostgreSQL that can go silent: frozen, it forwards
 * nothing either way and closes nothing (a partition, a half-open connection).
 */
class SilentProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<{ a: Socket; b: Socket; queued: Array<[Socket, Buffer]> }>();
  private frozen = false;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async open(): Promise<void> {
    this.port = await freePort();
    const server = createServer((a) => {
      const b = connect(this.target.port, this.target.host);
      const pair = { a, b, queued: [] as Array<[Socket, Buffer]> };
      this.pairs.add(pair);
      const forward = (to: Socket) => (chunk: Buffer) => {
        if (this.frozen) pair.queued.push([to, chunk]);
        else to.write(chunk);
      };
      a.on("data", forward(b));
      b.on("data", forward(a));
      for (const s of [a, b]) {
        s.on("error", () => undefined);
        s.on("close", () => {
          this.pairs.delete(pair);
          a.destroy();
          b.destroy();
        });
      }
    });
    await new Promise<void>((resolve) => server.listen(this.port, "127.0.0.1", resolve));
    this.server = server;
  }

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
    for (const p of this.pairs) for (const [to, chunk] of p.queued.splice(0)) to.write(chunk);
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.a.destroy();
      p.b.destroy();
    }
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe("toolgate control: a replica that silently lost PostgreSQL", () => {
  let db: FreshDatabase;
  let proxy: SilentProxy;
  let svc: ControlService | undefined;

  beforeAll(async () => {
    db = await freshDatabase();
    const u = new URL(db.url);
    proxy = new SilentProxy({ host: u.hostname, port: Number(u.port || 5432) });
    await proxy.open();
  });
  afterAll(async () => {
    proxy?.thaw();
    await svc?.stop();
    await proxy?.close();
    await db?.drop();
  });

  test("stops vouching (no more pings: its sidecars go stale and fail closed) though no connection errors", async () => {
    const u = new URL(db.url);
    u.hostname = "127.0.0.1";
    u.port = String(proxy.port);
    svc = await startReplica(u.toString());
    const credential = await sidecar("agent-p");
    const abort = new AbortController();
    const res = await fetch(new URL("/fleet/v1/stream", svc.url), {
      headers: { authorization: `Bearer ${credential}`, "x-toolgate-instance": "sc-p" },
      signal: abort.signal,
    });
    expect(res.status).toBe(200);
    const pings: number[] = [];
    let text = "";
    void (async () => {
      try {
        for await (const chunk of res.body as ReadableStream<Uint8Array>) {
          text += new TextDecoder().decode(chunk);
          let i: number;
          while ((i = text.indexOf("\n\n")) >= 0) {
            if (text.slice(0, i).startsWith("event: ping")) pings.push(Date.now());
            text = text.slice(i + 2);
          }
        }
      } catch {
        // aborted
      }
    })();
    await until(() => pings.length >= 2);
    proxy.freeze();
    const frozenAt = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    abort.abort();
    // pingMs 250: within 1 s of the silence the replica must have stopped vouching
    expect(pings.filter((t) => t > frozenAt + 1000)).toEqual([]);
  });
});
