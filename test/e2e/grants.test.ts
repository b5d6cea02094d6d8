/**
 * Grants end to end: a real toolgate (both ports) signs a grant onto each
 * allow; the example refund service (examples/refund-service/server.js, run
 * as a child process that imports the built `toolgate/verify` entry point —
 * the test command builds dist/ first) fetches the JWKS from the control port
 * and executes a refund only with a valid grant for exactly that request.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const root = join(__dirname, "..", "..");

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string }>;
  grant?: string;
  access_request?: { evaluation_id: string; expires_at: string };
}
interface Refused {
  code: string;
  message: string;
}

const refund = (amount: number, customer = "cust_1") =>
  refRequest({ tool: "refunds.issue", args: { amount, currency: "EUR" }, customer });

function decode(jws: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [h, p] = jws.split(".");
  return {
    header: JSON.parse(Buffer.from(h ?? "", "base64url").toString("utf8")) as Record<
      string,
      unknown
    >,
    claims: JSON.parse(Buffer.from(p ?? "", "base64url").toString("utf8")) as Record<
      string,
      unknown
    >,
  };
}

let dir: string;
let tg: Toolgate; // the sidecar the backend trusts (its JWKS)
let shortLived: Toolgate; // the same signing key, refund grants living 1 s
let backend: ChildProcess;
let backendUrl: string;

async function startBackend(jwksUrl: string): Promise<void> {
  backend = spawn(process.execPath, [join(root, "examples", "refund-service", "server.js")], {
    cwd: root,
    env: {
      ...process.env,
      PORT: "0",
      TOOLGATE_JWKS_URL: jwksUrl,
      GRANT_ISSUER: "toolgate:support-triage",
      GRANT_CLOCK_SKEW_SECONDS: "0",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: backend.stdout as NodeJS.ReadableStream });
  backendUrl = await new Promise<string>((resolve, reject) => {
    backend.once("exit", (code) => reject(new Error(`refund service exited (${code})`)));
    lines.on("line", (l) => {
      const m = JSON.parse(l) as { event: string; url?: string };
      if (m.event === "listening" && m.url) resolve(m.url);
    });
  });
}

beforeAll(async () => {
  dir = tempDir();
  const keyFile = join(dir, "grant-key.pem");
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
  const keys = { TOOLGATE_GRANTS_PRIVATE_KEY_FILE: keyFile, TOOLGATE_GRANTS_KEY_ID: "grant-1" };
  tg = await startTestToolgate({ ...keys, TOOLGATE_CONTROL_PORT: "0" });
  shortLived = await startTestToolgate({
    ...keys,
    TOOLGATE_CONTROL_ENABLED: "false",
    TOOLGATE_GRANTS_TOOLS: JSON.stringify({ "refunds.issue": { ttl_seconds: 1 } }),
  });
  await startBackend(`${tg.controlServer?.url}/.well-known/jwks.json`);
});

afterAll(async () => {
  backend?.kill("SIGTERM");
  await Promise.all([tg?.stop(), shortLived?.stop()]);
});

const decide = (req: Record<string, unknown>, on: Toolgate = tg): Promise<Decision> =>
  decideAt(on.agentServer.url, req);

async function allowedGrant(req: Record<string, unknown>, on: Toolgate = tg): Promise<string> {
  const d = await decide(req, on);
  expect(d.outcome).toBe("allow");
  expect(typeof d.grant).toBe("string");
  return d.grant as string;
}

function execute(grant: string | undefined, req: Record<string, unknown>) {
  return postJson(
    backendUrl,
    "/refunds",
    req,
    grant === undefined ? {} : { authorization: `Bearer ${grant}` },
  );
}

async function refundCount(): Promise<number> {
  const res = await http(backendUrl, "GET", "/refunds");
  return (res.json as { refunds: unknown[] }).refunds.length;
}

describe("the JWKS", () => {
  test("is public on the control port and holds public keys only", async () => {
    const res = await http(tg.controlServer?.url ?? "", "GET", "/.well-known/jwks.json");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/jwk-set\+json/);
    const { keys } = res.json as { keys: Array<Record<string, unknown>> };
    expect(keys).toEqual([
      expect.objectContaining({
        kty: "EC",
        crv: "P-256",
        kid: "grant-1",
        alg: "ES256",
        use: "sig",
      }),
    ]);
    expect(keys[0]).not.toHaveProperty("d");
  });
});

describe("a refund through its grant", () => {
  test("allowed refund → grant → the backend executes once; a replay is refused", async () => {
    const req = refund(20);
    const grant = await allowedGrant(req);
    const { header, claims } = decode(grant);
    expect(header).toEqual({ alg: "ES256", typ: "toolgate-grant+jwt", kid: "grant-1" });
    expect(claims).toMatchObject({
      iss: "toolgate:support-triage",
      aud: "tool:refunds.issue",
      sub: "alice",
      act: { sub: "support-triage" },
      tool: "refunds.issue",
      resource: { type: "customer", id: "cust_1" },
      single_use: true,
    });
    expect((claims.exp as number) - (claims.iat as number)).toBe(60);

    const before = await refundCount();
    const ok = await execute(grant, req);
    expect(ok.status).toBe(201);
    expect(ok.json).toMatchObject({
      customer: "cust_1",
      amount: 20,
      grant_jti: claims.jti,
      decision_id: claims.decision_id,
      on_behalf_of: "alice",
      agent: "support-triage",
    });

    const replay = await execute(grant, req);
    expect(replay.status).toBe(409);
    expect((replay.json as Refused).code).toBe("grant_replayed");
    expect(await refundCount()).toBe(before + 1);
  });

  test("a changed amount, customer or subject is refused, and does not burn the grant", async () => {
    const req = refund(20);
    const grant = await allowedGrant(req);
    const before = await refundCount();
    for (const changed of [
      refund(30),
      refund(20, "cust_2"),
      { ...req, subject: { type: "user", id: "sam" } },
      {
        ...req,
        context: { job: { id: "job_2", purpose: "support_triage", customer_id: "cust_1" } },
      },
    ]) {
      const res = await execute(grant, changed);
      expect(res.status).toBe(403);
      expect((res.json as Refused).code).toBe("grant_binding_mismatch");
    }
    expect(await refundCount()).toBe(before);
    expect((await execute(grant, req)).status).toBe(201);
  });

  test("an expired grant is refused", async () => {
    const req = refund(15);
    const grant = await allowedGrant(req, shortLived);
    const { exp } = decode(grant).claims as { exp: number };
    // the backend tolerates no skew: wait until the grant's exp has passed
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 100));
    const res = await execute(grant, req);
    expect(res.status).toBe(401);
    expect((res.json as Refused).code).toBe("grant_expired");
  });

  test("a grant for another tool is refused", async () => {
    const read = refRequest({ tool: "tickets.read" });
    const grant = await allowedGrant(read);
    expect(decode(grant).claims).toMatchObject({ aud: "tool:tickets.read", single_use: false });
    for (const body of [read, refund(20)]) {
      const res = await execute(grant, body);
      expect(res.status).toBe(403);
      expect((res.json as Refused).code).toBe("grant_audience_mismatch");
    }
  });

  test("no grant, an unsigned token and a forged one are refused", async () => {
    const req = refund(20);
    const missing = await execute(undefined, req);
    expect(missing.status).toBe(401);
    expect((missing.json as Refused).code).toBe("grant_malformed");

    const { claims } = decode(await allowedGrant(req));
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const payload = b64({ ...claims, jti: "forged-1" });
    const unsigned = `${b64({ alg: "none", typ: "toolgate-grant+jwt", kid: "grant-1" })}.${payload}.`;
    const r1 = await execute(unsigned, req);
    expect(r1.status).toBe(401);
    expect((r1.json as Refused).code).toBe("grant_signature_invalid");

    // a stranger's key, claiming toolgate's kid
    const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const input = `${b64({ alg: "ES256", typ: "toolgate-grant+jwt", kid: "grant-1" })}.${payload}`;
    const sig = sign("sha256", Buffer.from(input), { key: stranger, dsaEncoding: "ieee-p1363" });
    const r2 = await execute(`${input}.${sig.toString("base64url")}`, req);
    expect(r2.status).toBe(401);
    expect((r2.json as Refused).code).toBe("grant_signature_invalid");

    // ... or an unknown kid
    const input3 = `${b64({ alg: "ES256", typ: "toolgate-grant+jwt", kid: "nobody" })}.${payload}`;
    const sig3 = sign("sha256", Buffer.from(input3), { key: stranger, dsaEncoding: "ieee-p1363" });
    const r3 = await execute(`${input3}.${sig3.toString("base64url")}`, req);
    expect(r3.status).toBe(401);
    expect((r3.json as Refused).code).toBe("grant_key_unknown");
  });
});

describe("only an allow carries a grant", () => {
  test("deny and needs_approval carry none, on every face", async () => {
    const deny = await decide(refund(20, "cust_2"));
    expect(deny.outcome).toBe("deny");
    expect(deny).not.toHaveProperty("grant");
    const na = await decide(refund(120));
    expect(na.outcome).toBe("needs_approval");
    expect(na).not.toHaveProperty("grant");

    const az = await postJson(tg.agentServer.url, "/access/v1/evaluation", refund(20));
    const azJson = az.json as { decision: boolean; context: Record<string, unknown> };
    expect(azJson.decision).toBe(true);
    expect(decode(azJson.context.grant as string).claims).toMatchObject({
      decision_id: azJson.context.decision_id,
    });
    const azDeny = await postJson(tg.agentServer.url, "/access/v1/evaluation", refund(120));
    expect((azDeny.json as { context: object }).context).not.toHaveProperty("grant");

    const opa = await postJson(tg.agentServer.url, "/v1/data/toolgate/decision", {
      input: refund(20),
    });
    expect(typeof (opa.json as { result: { grant: unknown } }).result.grant).toBe("string");
  });

  test("an approved refund gets a grant the backend honours; a revoked approval gets none", async () => {
    const control = tg.controlServer?.url ?? "";
    const agent = tg.agentServer.url;
    const approvedRequest = async (req: Record<string, unknown>) => {
      const d = await decide(req);
      expect(d.outcome).toBe("needs_approval");
      const task = await postJson(agent, "/access/v1/requests", {
        ...req,
        denial: { evaluation_id: d.access_request?.evaluation_id },
      });
      expect(task.status).toBe(201);
      const id = (task.json as { task: { id: string } }).task.id;
      const ok = await postJson(
        control,
        `/v1/approvals/${id}/approve`,
        {},
        bearer(await token("maria", { roles: ["support_manager"] })),
      );
      expect(ok.status).toBe(200);
      const st = await http(agent, "GET", `/access/v1/requests/${id}`);
      return { id, approval: (st.json as { result: { approval: unknown } }).result.approval };
    };
    const withApproval = (req: Record<string, unknown>, approval: unknown) => ({
      ...req,
      context: { ...(req.context as object), approval },
    });

    const req = refund(120);
    const { approval } = await approvedRequest(req);
    const grant = await allowedGrant(withApproval(req, approval));
    // the grant binds the job, not the approval: the backend gets the plain request
    const ok = await execute(grant, req);
    expect(ok.status).toBe(201);
    expect((ok.json as { amount: number }).amount).toBe(120);

    const req2 = refund(130);
    const second = await approvedRequest(req2);
    const revoked = await postJson(
      control,
      `/v1/approvals/${second.id}/revoke`,
      {},
      bearer(await token("root", { roles: ["admin"] })),
    );
    expect(revoked.status).toBe(200);
    const d = await decide(withApproval(req2, second.approval));
    expect(d.outcome).not.toBe("allow");
    expect(d).not.toHaveProperty("grant");
  });
});
