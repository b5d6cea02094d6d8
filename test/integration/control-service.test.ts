/**
 * `toolgate control` end to end: real PostgreSQL (the jest run's server, a
 * fresh database per file), two real replicas over one database on loopback,
 * real tokens (dev-token for people, dev-key-signed sidecar credentials), a
 * plain fetch reader on the SSE stream. PostgreSQL going away is a real TCP
 * proxy in front of the server being closed.
 */
import { randomUUID } from "node:crypto";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { createServer, connect, Socket, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } from "../../src/approvals/binding";
import { devTokenCommand } from "../../src/cli/dev-token";
import { compileConfig } from "../../src/config";
import { newSwitchId } from "../../src/containment/store";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";
import { verifyTrail } from "../../src/trail";
import { main } from "../../src/cli/main";
import { freePort } from "../helpers/net";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { token } from "../helpers/tokens";

jest.setTimeout(60_000);

const HMAC = "test-key-0123456789abcdef";

interface Replica extends ControlService {
  stateDir: string;
}

async function startReplica(
  url: string,
  replica: string,
  now?: () => number,
  spanExporter?: InMemorySpanExporter,
): Promise<Replica> {
  const stateDir = mkdtempSync(join(tmpdir(), "toolgate-control-"));
  const config = compileConfig(
    {},
    {
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: stateDir,
      TOOLGATE_AUDIT_HMAC_KEY: HMAC,
      TOOLGATE_POSTGRES_URL: url,
    },
  );
  const svc = await startControlService(config, {
    log: silentLogger,
    env: spanExporter !== undefined ? {} : { OTEL_SDK_DISABLED: "true" },
    ...(spanExporter !== undefined ? { spanExporter } : {}),
    replica,
    pingMs: 250,
    housekeepingIntervalMs: 500,
    ...(now !== undefined ? { now } : {}),
  });
  return Object.assign(svc, { stateDir });
}

/** The control trail's records (`<state.dir>/audit/control`), after its chain is verified. */
async function trailRecords(
  stateDir: string,
): Promise<Array<{ kind: string; record: Record<string, unknown> }>> {
  const dir = join(stateDir, "audit", "control");
  await new Promise((r) => setTimeout(r, 300)); // the writer flushes every 50 ms
  expect(verifyTrail([dir]).ok).toBe(true);
  const out: Array<{ kind: string; record: Record<string, unknown> }> = [];
  for (const f of readdirSync(dir).sort()) {
    for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
      if (line !== "")
        out.push(JSON.parse(line) as { kind: string; record: Record<string, unknown> });
    }
  }
  return out;
}

/** `toolgate dev-token <user>`, in process. */
async function devToken(user: string): Promise<string> {
  let out = "";
  const code = await devTokenCommand([user], { stdout: (s) => (out += s) });
  expect(code).toBe(0);
  return out.trim();
}

/** A sidecar credential of `agent`, as a dev-mode sidecar mints it. */
function sidecar(agent: string | undefined, claims: Record<string, unknown> = {}): Promise<string> {
  return token(`agent:${agent ?? "nobody"}`, {
    audience: "toolgate-fleet",
    claims: agent === undefined ? claims : { toolgate_agent: agent, ...claims },
  });
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function call(
  base: string,
  method: string,
  path: string,
  bearer: string | undefined,
  body?: unknown,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(new URL(path, base), {
    method,
    headers,
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>),
  };
}

interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A plain fetch reader on /fleet/v1/stream. */
class Stream {
  readonly events: SseEvent[] = [];
  private buffer = "";
  private waiters: Array<() => void> = [];
  private readonly abort = new AbortController();
  status = 0;
  contentType: string | null = null;
  /** Resolves when the server ends the stream (or it is closed here). */
  done: Promise<void> = Promise.resolve();

  static async open(base: string, credential: string, instance = "sc-1"): Promise<Stream> {
    const s = new Stream();
    const res = await fetch(new URL("/fleet/v1/stream", base), {
      headers: { authorization: `Bearer ${credential}`, "x-toolgate-instance": instance },
      signal: s.abort.signal,
    });
    s.status = res.status;
    s.contentType = res.headers.get("content-type");
    s.done = res.body !== null ? s.pump(res.body) : Promise.resolve();
    return s;
  }

  private async pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of body) {
        this.buffer += decoder.decode(chunk, { stream: true });
        let i: number;
        while ((i = this.buffer.indexOf("\n\n")) >= 0) {
          const block = this.buffer.slice(0, i);
          this.buffer = this.buffer.slice(i + 2);
          let event = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          this.events.push({ event, data: JSON.parse(data) as Record<string, unknown> });
          for (const w of this.waiters.splice(0)) w();
        }
      }
    } catch {
      // aborted
    }
  }

  /** The first event (from the start) that matches, waiting up to `ms`. */
  async next(match: (e: SseEvent) => boolean, ms = 5000): Promise<SseEvent> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.events.find(match);
      if (hit !== undefined) return hit;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`no matching event within ${ms} ms; got ${JSON.stringify(this.events)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.abort.abort();
  }
}

const changeOf = (id: string, op: string) => (e: SseEvent) =>
  e.event === "change" &&
  e.data.op === op &&
  (e.data.switch as { id?: unknown } | undefined)?.id === id;

/** An evaluation a sidecar of `agent` recorded for `initiator`, and the access request citing it. */
function evaluationFor(agent: string, initiator: string, n: number) {
  const request = {
    subject: { type: "user", id: initiator },
    action: { name: "refund.create", properties: { arguments: { amount: 40 + n } } },
    resource: { type: "order", id: `o-${n}` },
    context: { job: { id: `job-${n}` } },
  };
  const now = Date.now();
  const evaluation = {
    evaluation_id: randomUUID(),
    decision_id: randomUUID(),
    agent_id: agent,
    binding_hash: bindingHash(request, DEFAULT_BINDING_CONTEXT_MEMBERS),
    binding_context_members: [...DEFAULT_BINDING_CONTEXT_MEMBERS],
    redacted_request: request,
    requirement: {
      approver_roles: ["support_manager"],
      single_use: true,
      ttl_seconds: 600,
      exclude: [],
    },
    reasons: ["refund_needs_approval"],
    initiator,
    tool: "refund.create",
    policy_revision: "rev-1",
    created_at: new Date(now).toISOString(),
    expires_at: new Date(now + 300_000).toISOString(),
  };
  return {
    evaluation,
    body: {
      evaluation,
      request: { ...request, denial: { evaluation_id: evaluation.evaluation_id } },
      idempotency_key: null,
      requester: initiator,
    },
  };
}

/** A TCP proxy in front of PostgreSQL: closing it is PostgreSQL going away for whoever connects through it. */
class Proxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  async open(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("error", () => undefined);
        s.on("close", () => {
          this.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, "127.0.0.1", resolve));
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe("toolgate control", () => {
  let db: FreshDatabase;
  let a: Replica;
  let b: Replica;
  const spansA = new InMemorySpanExporter();
  let olga: string;
  let maria: string;
  let alice: string;
  let botA: string;
  let botB: string;

  beforeAll(async () => {
    db = await freshDatabase();
    // two replicas starting together over one database: migrations run once, under the lock
    [a, b] = await Promise.all([
      startReplica(db.url, "replica-a", undefined, spansA),
      startReplica(db.url, "replica-b"),
    ]);
    olga = await devToken("olga");
    maria = await devToken("maria");
    alice = await devToken("alice");
    botA = await sidecar("bot-a");
    botB = await sidecar("bot-b");
  });

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await db?.drop();
  });

  test("health, readiness and status", async () => {
    expect((await call(a.url, "GET", "/health/live", undefined)).status).toBe(200);
    const ready = await call(a.url, "GET", "/health/ready", undefined);
    expect(ready.status).toBe(200);
    expect(Object.keys(ready.body.components as object)).toEqual([
      "audit",
      "postgres",
      "switch_stream",
      "housekeeping",
      "control_server",
    ]);
    const status = await call(b.url, "GET", "/v1/status", olga);
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ service: "control", replica: "replica-b", ready: true });
    expect((await call(a.url, "GET", "/v1/status", undefined)).status).toBe(401);
    const metrics = await fetch(new URL("/metrics", a.url));
    expect(await metrics.text()).toContain("toolgate_fleet_stream_clients");
  });

  test("a switch olga sets reaches streams on both replicas; its lifting too", async () => {
    const onA = await Stream.open(a.url, botA, "a-1");
    const onB = await Stream.open(b.url, botA, "a-2");
    expect(onA.status).toBe(200);
    expect(onA.contentType).toMatch(/^text\/event-stream/);
    const snapA = await onA.next((e) => e.event === "snapshot");
    expect(snapA.data.switches).toEqual([]);
    await onB.next((e) => e.event === "snapshot");

    const created = await call(a.url, "POST", "/v1/killswitches", olga, {
      scope: { tool: "refund.create" },
      reason: "refunds misbehave",
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(created.body).toMatchObject({
      scope: { tool: "refund.create" },
      created_by: "olga",
      persisted: true,
    });

    const onAChange = await onA.next(changeOf(id, "create"));
    expect(onAChange.data.switch).toMatchObject({
      id,
      reason: "refunds misbehave",
      persisted: true,
    });
    // set on replica A, delivered by replica B (its own LISTEN)
    const onBChange = await onB.next(changeOf(id, "create"));
    expect(onBChange.data.seq).toBe(onAChange.data.seq);

    // pings keep coming, after the change, carrying its seq or later
    const ping = await onB.next(
      (e) => e.event === "ping" && (e.data.seq as number) >= (onBChange.data.seq as number),
    );
    expect(typeof ping.data.at).toBe("string");

    // a new stream gets it in its snapshot
    const late = await Stream.open(b.url, botA, "a-3");
    const snap = await late.next((e) => e.event === "snapshot");
    expect((snap.data.switches as Array<{ id: string }>).map((s) => s.id)).toContain(id);

    // a switch scoped to another agent is not sent to this agent's sidecars
    const other = await call(b.url, "POST", "/v1/killswitches", olga, {
      scope: { agent: "bot-b" },
      reason: "bot-b only",
    });
    expect(other.status).toBe(201);
    const onlyB = await Stream.open(a.url, botB, "b-1");
    await onlyB.next((e) => e.event === "snapshot" && (e.data.switches as unknown[]).length === 2);

    const lifted = await call(b.url, "DELETE", `/v1/killswitches/${id}`, olga);
    expect(lifted.status).toBe(200);
    expect(lifted.body).toMatchObject({ id, deleted_by: "olga" });
    await onA.next(changeOf(id, "delete"));
    await onB.next(changeOf(id, "delete"));
    await onlyB.next(changeOf(id, "delete"));
    expect(onA.events.some(changeOf(other.body.id as string, "create"))).toBe(false);

    const listed = await call(a.url, "GET", "/v1/killswitches", olga);
    expect((listed.body.killswitches as Array<{ id: string }>).map((s) => s.id)).toEqual([
      other.body.id,
    ]);
    expect((await call(a.url, "DELETE", `/v1/killswitches/${id}`, olga)).body.code).toBe(
      "killswitch_not_found",
    );
    // kill switches need the admin role
    expect((await call(a.url, "POST", "/v1/killswitches", maria, { reason: "x" })).status).toBe(
      403,
    );

    // the sidecars view names the streams' sidecars (admin)
    const view = await call(a.url, "GET", "/v1/fleet/sidecars", olga);
    expect(view.status).toBe(200);
    const instances = (view.body.sidecars as Array<{ instance: string; agent: string }>).map(
      (s) => `${s.agent}/${s.instance}`,
    );
    expect(instances).toEqual(expect.arrayContaining(["bot-a/a-1", "bot-a/a-2", "bot-b/b-1"]));
    for (const s of [onA, onB, late, onlyB]) s.close();
  });

  test("credentials: each kind only on its own API, one agent per credential", async () => {
    // a person's token on the sidecar API, a sidecar's on the human API
    expect((await call(a.url, "GET", "/fleet/v1/stream", olga)).status).toBe(401);
    expect(
      (
        await call(a.url, "POST", "/fleet/v1/hello", maria, {
          instance: "x",
          bundle: null,
          version: null,
        })
      ).status,
    ).toBe(401);
    expect((await call(a.url, "GET", "/v1/approvals", botA)).status).toBe(401);
    expect((await call(a.url, "GET", "/v1/killswitches", botA)).status).toBe(401);
    // whatever the path's case (the router matches case-insensitively)
    for (const path of ["/FLEET/v1/hello", "/Fleet/v1/hello", "/fleet/V1/hello"]) {
      const r = await call(a.url, "POST", path, olga, {
        instance: "x",
        bundle: null,
        version: null,
      });
      expect([path, r.status]).toEqual([path, 401]);
    }
    expect((await call(a.url, "GET", "/V1/approvals", botA)).status).toBe(401);
    expect((await call(a.url, "GET", "/FLEET/v1/access-requests/x", botA)).status).toBe(404);
    // no token, a forged one, one naming no agent
    expect((await call(a.url, "GET", "/fleet/v1/stream", undefined)).status).toBe(401);
    expect(
      (
        await call(
          a.url,
          "GET",
          "/fleet/v1/stream",
          await token("agent:x", {
            audience: "toolgate-fleet",
            forged: true,
            claims: { toolgate_agent: "x" },
          }),
        )
      ).status,
    ).toBe(401);
    const noAgent = await call(
      a.url,
      "GET",
      "/fleet/v1/access-requests/x",
      await sidecar(undefined),
    );
    expect(noAgent.status).toBe(401);
    expect(noAgent.body.message).toMatch(/names no agent/);
    // a stream ends when its credential does (the sidecar reconnects with a fresh one)
    const shortLived = await token("agent:bot-a", {
      audience: "toolgate-fleet",
      claims: { toolgate_agent: "bot-a" },
      expiresInSeconds: 2,
    });
    const brief = await Stream.open(a.url, shortLived, "brief");
    await brief.next((e) => e.event === "snapshot");
    const opened = Date.now();
    await brief.done;
    expect(Date.now() - opened).toBeLessThan(4000);
    expect(brief.events.at(-1)?.event).not.toBe("change");
    // a hello registers the sidecar; its answer names the replica
    const hello = await call(b.url, "POST", "/fleet/v1/hello", botA, {
      instance: "hello-1",
      bundle: { name: "support", revision: "r1" },
      version: "0.1.0",
    });
    expect(hello).toEqual({ status: 200, body: { replica: "replica-b" } });
    // every body is checked against its schema
    const bad = await call(a.url, "POST", "/fleet/v1/hello", botA, {
      instance: "x",
      bundle: null,
      version: null,
      extra: 1,
    });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe("invalid_request");
  });

  test("streams whose client leaves at once are not kept", async () => {
    const clients = async () =>
      ((await call(a.url, "GET", "/v1/status", olga)).body.stream as { clients: number }).clients;
    const before = await clients();
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const ac = new AbortController();
        setTimeout(() => ac.abort(), i % 10);
        await fetch(new URL("/fleet/v1/stream", a.url), {
          headers: { authorization: `Bearer ${botA}` },
          signal: ac.signal,
        }).then(
          async (res) => {
            ac.abort();
            await res.body?.cancel().catch(() => undefined);
          },
          () => undefined,
        );
      }),
    );
    const deadline = Date.now() + 5000;
    while ((await clients()) !== before && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    expect(await clients()).toBe(before);
  });

  test("nested agent claim paths", async () => {
    const { claimAt } = await import("../../src/control");
    const claims = { "kubernetes.io": { serviceaccount: { name: "bot-a" } } };
    expect(claimAt(claims, "kubernetes.io/serviceaccount/name")).toBe("bot-a");
    expect(claimAt(claims, "kubernetes.io/serviceaccount/uid")).toBeUndefined();
    expect(claimAt({ a: "x" }, "toString")).toBeUndefined();
  });

  test("an access request through /fleet/v1: maria approves, the initiator may not, another agent sees 404", async () => {
    const { body } = evaluationFor("bot-a", "alice", 1);
    const submitted = await call(a.url, "POST", "/fleet/v1/access-requests", botA, body);
    expect(submitted.status).toBe(201);
    expect(submitted.body.created).toBe(true);
    const task = submitted.body.task as Record<string, unknown>;
    expect(task).toMatchObject({
      agent_id: "bot-a",
      status: "pending",
      requester: "alice",
      used_at: null,
    });
    expect(submitted.body.evaluation).toMatchObject({
      evaluation_id: body.evaluation.evaluation_id,
    });
    const id = task.id as string;

    // a resubmission (on the other replica) answers the same task
    const again = await call(b.url, "POST", "/fleet/v1/access-requests", botA, body);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ created: false, task: { id } });

    // another agent's sidecar: not found, whatever it tries
    expect((await call(a.url, "GET", `/fleet/v1/access-requests/${id}`, botB)).status).toBe(404);
    expect(
      (
        await call(a.url, "POST", `/fleet/v1/access-requests/${id}/cancel`, botB, {
          requester: null,
        })
      ).status,
    ).toBe(404);
    expect(
      (
        await call(a.url, "POST", `/fleet/v1/approvals/${id}/use`, botB, {
          decision_id: "d",
          single_use: true,
        })
      ).status,
    ).toBe(404);
    // and it cannot submit an evaluation of another agent
    const foreign = await call(
      a.url,
      "POST",
      "/fleet/v1/access-requests",
      botB,
      evaluationFor("bot-a", "alice", 2).body,
    );
    expect(foreign.status).toBe(404);
    expect(foreign.body.code).toBe("approval_not_found");

    // the approver sees it; alice (the initiator, no approver role) does not
    const list = await call(b.url, "GET", "/v1/approvals?status=pending", maria);
    expect((list.body.approvals as Array<{ id: string }>).map((t) => t.id)).toContain(id);
    const aliceList = await call(b.url, "GET", "/v1/approvals?status=pending", alice);
    expect((aliceList.body.approvals as unknown[]).length).toBe(0);

    const approved = await call(b.url, "POST", `/v1/approvals/${id}/approve`, maria, {
      comment: "ok",
    });
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({
      id,
      status: "approved",
      decided_by: "maria",
      comment: "ok",
      agent: "bot-a",
      initiator: "alice",
    });
    // decided once
    expect((await call(a.url, "POST", `/v1/approvals/${id}/deny`, maria)).status).toBe(409);

    const read = await call(a.url, "GET", `/fleet/v1/access-requests/${id}`, botA);
    expect(read.status).toBe(200);
    expect(read.body.task).toMatchObject({
      id,
      status: "approved",
      decided_by: "maria",
      decided_by_roles: ["support_manager"],
    });
    expect(typeof (read.body.task as { approved_until: unknown }).approved_until).toBe("string");

    // the initiator cannot approve her own request, even holding the role
    const own = evaluationFor("bot-a", "maria", 3);
    const mine = await call(a.url, "POST", "/fleet/v1/access-requests", botA, own.body);
    expect(mine.status).toBe(201);
    const mineId = (mine.body.task as { id: string }).id;
    const refused = await call(a.url, "POST", `/v1/approvals/${mineId}/approve`, maria);
    expect(refused.status).toBe(403);
    expect(refused.body.message).toMatch(/the approver is the initiator/);
    // alice holds no approver role
    expect((await call(a.url, "POST", `/v1/approvals/${mineId}/approve`, alice)).status).toBe(403);

    // the request must be the one the evaluation is bound to
    const tampered = evaluationFor("bot-a", "alice", 4);
    const t = tampered.body.request as {
      action: { properties: { arguments: { amount: number } } };
    };
    t.action.properties.arguments.amount = 9999;
    const mismatch = await call(a.url, "POST", "/fleet/v1/access-requests", botA, tampered.body);
    expect(mismatch.status).toBe(400);
    expect(mismatch.body.code).toBe("invalid_denial_binding");

    // the initiator withdraws; a revocation needs the admin role
    const cancelled = await call(
      a.url,
      "POST",
      `/fleet/v1/access-requests/${mineId}/cancel`,
      botA,
      { requester: "maria" },
    );
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.task).toMatchObject({ status: "cancelled" });
    expect((await call(a.url, "POST", `/v1/approvals/${id}/revoke`, maria)).status).toBe(403);
  });

  test("40 concurrent single-use claims over two replicas: exactly one is claimed", async () => {
    const { body } = evaluationFor("bot-a", "alice", 10);
    const submitted = await call(a.url, "POST", "/fleet/v1/access-requests", botA, body);
    const id = (submitted.body.task as { id: string }).id;
    expect((await call(a.url, "POST", `/v1/approvals/${id}/approve`, maria)).status).toBe(200);
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        call(i % 2 === 0 ? a.url : b.url, "POST", `/fleet/v1/approvals/${id}/use`, botA, {
          decision_id: `dec-use-${i}`,
          single_use: true,
        }),
      ),
    );
    expect(answers.map((r) => r.status)).toEqual(Array(40).fill(200));
    const claimed = answers.filter((r) => r.body.claimed === true);
    expect(claimed).toHaveLength(1);
    const winner = (claimed[0]?.body.task as { used_by_decision_id: string }).used_by_decision_id;
    const read = await call(b.url, "GET", `/fleet/v1/access-requests/${id}`, botA);
    expect(read.body.task).toMatchObject({ used_by_decision_id: winner });
    // olga revokes it
    const revoked = await call(a.url, "POST", `/v1/approvals/${id}/revoke`, olga);
    expect(revoked.status).toBe(200);

    // audited on the replica that served each step, hash-chained, naming the decision
    const trailA = await trailRecords(a.stateDir);
    const trailB = await trailRecords(b.stateDir);
    const events = [...trailA, ...trailB].filter(
      (l) => l.kind === "approval" && l.record.approval_id === id,
    );
    expect(events.map((l) => l.record.event).sort()).toEqual(
      ["approved", "requested", "revoked", "used"].sort(),
    );
    for (const l of events) expect(l.record.decision_id).toBe(body.evaluation.decision_id);
    const used = events.find((l) => l.record.event === "used");
    expect(used?.record.used_by_decision_id).toBe(winner);
    expect(
      trailA.some((l) => l.kind === "containment" && l.record.event === "killswitch.created"),
    ).toBe(true);

    // and as spans: approval events name the decision they answer
    await a.auditor.flush();
    const spans = spansA.getFinishedSpans();
    const approvedSpan = spans.find(
      (sp) =>
        sp.name === "toolgate.approval approved" && sp.attributes["toolgate.approval.id"] === id,
    );
    expect(approvedSpan?.attributes["toolgate.decision.id"]).toBe(body.evaluation.decision_id);
    expect(approvedSpan?.attributes["toolgate.approver.id"]).toBe("maria");
    expect(spans.some((sp) => sp.name === "toolgate.containment killswitch.created")).toBe(true);
  });

  test("budgets, rates and the budgets view", async () => {
    const item = {
      budget_id: "refunds",
      key: "refunds|cust-1",
      amount: 60,
      max_total: 100,
      window_seconds: 3600,
    };
    const first = await call(a.url, "POST", "/fleet/v1/budgets/reserve", botA, {
      decision_id: "d-b1",
      ttl_seconds: 60,
      items: [item],
    });
    expect(first.body).toEqual({ ok: true });
    const second = await call(b.url, "POST", "/fleet/v1/budgets/reserve", botB, {
      decision_id: "d-b2",
      ttl_seconds: 60,
      items: [item],
    });
    expect(second.body).toMatchObject({
      ok: false,
      budget_id: "refunds",
      used: 60,
      max_total: 100,
      amount: 60,
    });
    expect(
      (
        await call(a.url, "POST", "/fleet/v1/budgets/resolve", botB, {
          decision_id: "d-b1",
          outcome: "release",
        })
      ).body,
    ).toEqual({ resolution: "none" });
    expect(
      (
        await call(a.url, "POST", "/fleet/v1/budgets/resolve", botA, {
          decision_id: "d-b1",
          outcome: "release",
        })
      ).body,
    ).toEqual({ resolution: "released" });
    expect(
      (
        await call(b.url, "POST", "/fleet/v1/budgets/reserve", botB, {
          decision_id: "d-b2",
          ttl_seconds: 60,
          items: [item],
        })
      ).body,
    ).toEqual({ ok: true });
    const usage = await call(a.url, "GET", "/v1/budgets", olga);
    expect(usage.body.budgets).toEqual([
      expect.objectContaining({ key: "refunds|cust-1", budget_id: "refunds", pending: 60 }),
    ]);
    expect((await call(a.url, "GET", "/v1/budgets", maria)).status).toBe(403);

    const lease = { rate_id: "r", key: "r|bot", rate_per_second: 0.001, burst: 5, want: 3 };
    expect((await call(a.url, "POST", "/fleet/v1/rates/lease", botA, lease)).body).toEqual({
      granted: 3,
      retry_after: 0,
    });
    expect((await call(b.url, "POST", "/fleet/v1/rates/lease", botA, lease)).body).toEqual({
      granted: 2,
      retry_after: 0,
    });
    const empty = await call(a.url, "POST", "/fleet/v1/rates/lease", botA, lease);
    expect(empty.body.granted).toBe(0);
    expect(empty.body.retry_after).toBeGreaterThanOrEqual(1);
    // the same key leased by another agent's sidecar is that agent's own bucket
    expect((await call(a.url, "POST", "/fleet/v1/rates/lease", botB, lease)).body).toEqual({
      granted: 3,
      retry_after: 0,
    });
  });
});

describe("toolgate control without PostgreSQL", () => {
  test("fleet.postgres_url is required", async () => {
    const config = compileConfig({}, { TOOLGATE_CONTROL_PORT: "0", TOOLGATE_LOG_LEVEL: "silent" });
    const err = (await startControlService(config, { log: silentLogger }).then(
      () => undefined,
      (e: unknown) => e,
    )) as { code?: string; message?: string } | undefined;
    expect(err?.code).toBe("config_invalid");
    expect(err?.message).toMatch(/fleet\.postgres_url.*TOOLGATE_POSTGRES_URL/s);
  });

  test("PostgreSQL unreachable: ready 503, writes 503 fleet_store_unavailable; back when it returns", async () => {
    const db = await freshDatabase();
    const target = new URL(db.url);
    const proxy = new Proxy(await freePort(), { host: target.hostname, port: Number(target.port) });
    await proxy.open();
    const viaProxy = new URL(db.url);
    viaProxy.hostname = "127.0.0.1";
    viaProxy.port = String(proxy.port);
    const svc = await startReplica(viaProxy.toString(), "replica-p");
    try {
      const olga = await devToken("olga");
      const bot = await sidecar("bot-a");
      expect((await call(svc.url, "GET", "/health/ready", undefined)).status).toBe(200);

      await proxy.close();
      await new Promise((r) => setTimeout(r, 1100)); // the cached ping ages out
      const ready = await call(svc.url, "GET", "/health/ready", undefined);
      expect(ready.status).toBe(503);
      const components = ready.body.components as Record<
        string,
        { state: string; detail?: string }
      >;
      expect(components.postgres?.state).toBe("ERROR");
      expect(components.postgres?.detail).toMatch(/PostgreSQL unreachable/);

      const write = await call(svc.url, "POST", "/v1/killswitches", olga, { reason: "stop" });
      expect(write.status).toBe(503);
      expect(write.body.code).toBe("fleet_store_unavailable");
      const use = await call(svc.url, "POST", "/fleet/v1/approvals/x/use", bot, {
        decision_id: "d",
        single_use: true,
      });
      expect(use.status).toBe(503);
      expect(use.body.code).toBe("fleet_store_unavailable");
      // a stream cannot start without its snapshot
      expect((await call(svc.url, "GET", "/fleet/v1/stream", bot)).status).toBe(503);

      await proxy.open();
      const deadline = Date.now() + 15_000;
      let status = 0;
      while (Date.now() < deadline && status !== 200) {
        await new Promise((r) => setTimeout(r, 300));
        status = (await call(svc.url, "GET", "/health/ready", undefined)).status;
      }
      expect(status).toBe(200);
      expect(
        (await call(svc.url, "POST", "/v1/killswitches", olga, { reason: "stop" })).status,
      ).toBe(201);
    } finally {
      await svc.stop();
      await proxy.close();
      await db.drop();
    }
  });
});

describe("toolgate control housekeeping and CLI", () => {
  test("a sidecar that does not read its stream is dropped; the others go on", async () => {
    const db = await freshDatabase();
    const svc = await startReplica(db.url, "replica-s");
    const slow = new Socket();
    try {
      const bot = await sidecar("bot-a");
      const olga = await devToken("olga");
      const reader = await Stream.open(svc.url, bot, "fast");
      await reader.next((e) => e.event === "snapshot");
      const { hostname, port } = new URL(svc.url);
      await new Promise<void>((resolve) => slow.connect(Number(port), hostname, resolve));
      slow.write(
        `GET /fleet/v1/stream HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${bot}\r\n` +
          "X-Toolgate-Instance: slow\r\n\r\n",
      );
      slow.pause(); // never reads: its kernel buffers fill, then the server's
      const clients = async () =>
        ((await call(svc.url, "GET", "/v1/status", olga)).body.stream as { clients: number })
          .clients;
      const until = async (want: number, ms: number) => {
        const deadline = Date.now() + ms;
        while ((await clients()) !== want && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 100));
        expect(await clients()).toBe(want);
      };
      await until(2, 5000);
      // changes, ~2 KB each, until the slow client's buffers (kernel, then server) are full
      const reason = "r".repeat(1900);
      const ids: string[] = [];
      const batch = () =>
        Promise.all(
          Array.from({ length: 50 }, () => {
            const id = newSwitchId();
            ids.push(id);
            return svc.store.createSwitch({
              id,
              scope: { tool: `tool-${ids.length}` },
              reason,
              createdBy: "olga",
              createdAt: Date.now(),
              expiresAt: null,
              deletedAt: null,
              deletedBy: null,
            });
          }),
        );
      while (ids.length < 30_000 && (await clients()) === 2) {
        for (let i = 0; i < 10; i++) await batch();
      }
      await until(1, 10_000);
      // the reading sidecar got every change
      const changes = () => reader.events.filter((e) => e.event === "change").length;
      const deadline = Date.now() + 30_000;
      while (changes() < ids.length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(changes()).toBe(ids.length);
      reader.close();
    } finally {
      slow.destroy();
      await svc.stop();
      await db.drop();
    }
  });

  test("any replica expires due tasks, once, and audits it", async () => {
    const db = await freshDatabase();
    const a = await startReplica(db.url, "replica-a");
    let late: Replica | undefined;
    try {
      const bot = await sidecar("bot-a");
      const { body } = evaluationFor("bot-a", "alice", 20);
      const submitted = await call(a.url, "POST", "/fleet/v1/access-requests", bot, body);
      const id = (submitted.body.task as { id: string }).id;
      // a replica whose clock is two hours on: its housekeeping finds the task overdue
      late = await startReplica(db.url, "replica-late", () => Date.now() + 2 * 3600_000);
      const deadline = Date.now() + 10_000;
      let status: unknown;
      while (Date.now() < deadline && status !== "expired") {
        await new Promise((r) => setTimeout(r, 200));
        status = (
          (await call(a.url, "GET", `/fleet/v1/access-requests/${id}`, bot)).body.task as {
            status?: unknown;
          }
        ).status;
      }
      expect(status).toBe("expired");
      const expired = (await trailRecords(late.stateDir)).filter(
        (l) => l.kind === "approval" && l.record.event === "expired",
      );
      expect(expired.map((l) => l.record.approval_id)).toEqual([id]);
      expect(expired[0]?.record.decision_id).toBe(body.evaluation.decision_id);
    } finally {
      await late?.stop();
      await a.stop();
      await db.drop();
    }
  });

  test("control migrate and --help", async () => {
    const db = await freshDatabase();
    const saved = process.env.TOOLGATE_POSTGRES_URL;
    const run = async (...argv: string[]) => {
      let stdout = "";
      let stderr = "";
      const code = await main(argv, {
        stdout: (s) => (stdout += s),
        stderr: (s) => (stderr += s),
      });
      return { code, stdout, stderr };
    };
    try {
      const help = await run("control", "--help");
      expect(help.code).toBe(0);
      expect(help.stdout).toContain("toolgate control [--config FILE]");
      expect(help.stdout).toContain("toolgate control migrate");
      expect((await run("control", "migrate", "--help")).stdout).not.toContain("run the fleet");

      delete process.env.TOOLGATE_POSTGRES_URL;
      const missing = await run("control", "migrate");
      expect(missing.code).toBe(2);
      expect(missing.stderr).toMatch(/config_invalid: key "fleet.postgres_url" is not set/);

      process.env.TOOLGATE_POSTGRES_URL = db.url;
      const first = await run("control", "migrate");
      expect(first).toMatchObject({ code: 0, stderr: "" });
      expect(first.stdout).toMatch(/^fleet store: applied migration\(s\) 1/);
      expect(await run("control", "migrate")).toMatchObject({
        code: 0,
        stdout: "fleet store: up to date\n",
      });
    } finally {
      if (saved === undefined) delete process.env.TOOLGATE_POSTGRES_URL;
      else process.env.TOOLGATE_POSTGRES_URL = saved;
      await db.drop();
    }
  });
});
