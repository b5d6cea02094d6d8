/**
 * Identity on its own: a real Identity; in mode jwt its TokenVerifier is a
 * fake (the token's signature, issuer and expiry are the verifier's business,
 * tested in the integration suite with real tokens), and the caller is a
 * Principal as a verified token gives it. The agent anchored to
 * configuration, the subject trusted or verified, the job claim.
 */
import { Identity, type TokenVerifier } from "../../src/identity";
import type { DecisionRequest, Principal } from "../../src/model";
import { AGENT, principal, unitRequest, refused } from "../helpers/units";

const NOW_NS = Date.parse("2031-01-01T00:00:00Z") * 1e6;

/** A TokenVerifier stand-in: the bearer token names the principal it verifies to. */
class FakeVerifier {
  readonly tokens: Array<string | undefined> = [];
  constructor(
    private readonly known: Record<string, Principal>,
    readonly dev = false,
  ) {}
  verify(token: string | undefined): Promise<Principal> {
    this.tokens.push(token);
    const p = token === undefined ? undefined : this.known[token];
    return p === undefined ? Promise.reject(new Error("unknown token")) : Promise.resolve(p);
  }
  /** TokenVerifier has a private constructor: a fake stands in structurally. */
  get verifier(): TokenVerifier {
    return this as unknown as TokenVerifier;
  }
}

const trusted = new Identity({ agentId: AGENT, mode: "trusted" });
const jwt = (jobClaim?: string): Identity =>
  new Identity({
    agentId: AGENT,
    mode: "jwt",
    verifier: new FakeVerifier({}).verifier,
    ...(jobClaim !== undefined ? { jobClaim } : {}),
  });

describe("the agent is configuration, never a request field", () => {
  const naming: Array<[string, (agent: unknown) => DecisionRequest]> = [
    ["context.agent.id", (agent) => unitRequest({ context: { agent: { id: agent } } })],
    ["context.agent_id", (agent) => unitRequest({ context: { agent_id: agent } })],
    [
      "subject.properties.act.sub",
      (agent) => ({
        ...unitRequest(),
        subject: { type: "user", id: "alice", properties: { act: { sub: agent } } },
      }),
    ],
  ];

  test.each(naming)("%s naming this agent is accepted", (_where, req) => {
    expect(trusted.verify(req(AGENT), NOW_NS).agent).toEqual({ id: AGENT });
  });

  test.each(naming)("%s naming another agent (or not a string) is agent_mismatch", (where, req) => {
    for (const other of ["billing-bot", null, 7, ""]) {
      const err = refused(() => trusted.verify(req(other), NOW_NS));
      expect(err.code).toBe("agent_mismatch");
      expect(err.status).toBe(403);
      expect(err.message).toBe(
        `${where} is ${JSON.stringify(other)}, but this sidecar serves agent "${AGENT}"`,
      );
    }
  });

  test("every place is checked, in jwt mode too, before the subject", () => {
    const both = unitRequest({ context: { agent: { id: AGENT }, agent_id: "billing-bot" } });
    expect(refused(() => trusted.verify(both, NOW_NS)).message).toMatch(/^context\.agent_id /);
    expect(refused(() => jwt().verify(both, NOW_NS, principal("sam"))).code).toBe("agent_mismatch");
    // a context.agent without an id names nothing
    expect(() => trusted.anchorAgent(unitRequest({ context: { agent: {} } }))).not.toThrow();
    expect(trusted.agentId).toBe(AGENT);
  });
});

describe("the subject", () => {
  test("trusted mode: as the caller sends it, marked trusted", () => {
    expect(trusted.verify(unitRequest({ user: "sam" }), NOW_NS)).toEqual({
      agent: { id: AGENT },
      subject: { id: "sam", method: "trusted" },
      time_ns: NOW_NS,
    });
    // a principal, if any, is not consulted
    expect(trusted.verify(unitRequest(), NOW_NS, principal("sam")).subject.id).toBe("alice");
    expect(trusted.mode).toBe("trusted");
    expect(trusted.devKeyTrusted).toBe(false);
  });

  test("jwt mode: the token's subject, with its claims and roles; another subject.id is subject_mismatch", () => {
    const id = jwt();
    expect(id.verify(unitRequest(), NOW_NS, principal("alice", ["support_agent"]))).toEqual({
      agent: { id: AGENT },
      subject: {
        id: "alice",
        method: "jwt",
        claims: {
          iss: "toolgate-dev",
          sub: "alice",
          aud: "toolgate-agent",
          exp: 2_000_000_000,
          roles: ["support_agent"],
        },
      },
      time_ns: NOW_NS,
    });
    const mismatch = refused(() =>
      id.verify(unitRequest({ user: "sam" }), NOW_NS, principal("alice")),
    );
    expect(mismatch.code).toBe("subject_mismatch");
    expect(mismatch.message).toBe('subject.id "sam" is not the token\'s subject "alice"');
    expect(refused(() => id.verify(unitRequest(), NOW_NS)).code).toBe("unauthenticated");
  });

  test("jwt mode needs a verifier; authenticate hands it the bearer token", async () => {
    expect(() => new Identity({ agentId: AGENT, mode: "jwt" })).toThrow(/needs a TokenVerifier/);
    const fake = new FakeVerifier({ "tok-alice": principal("alice") }, true);
    const id = new Identity({ agentId: AGENT, mode: "jwt", verifier: fake.verifier });
    await expect(id.authenticate({ authorization: "Bearer tok-alice" })).resolves.toEqual(
      principal("alice"),
    );
    await expect(id.authenticate({})).rejects.toThrow("unknown token");
    expect(fake.tokens).toEqual(["tok-alice", undefined]);
    expect(id.devKeyTrusted).toBe(true);
    // trusted mode authenticates nobody
    await expect(trusted.authenticate({ authorization: "Bearer tok-alice" })).resolves.toBe(
      undefined,
    );
  });
});

describe("the job claim (identity.jwt.job_claim)", () => {
  const job = (id: unknown): DecisionRequest => unitRequest({ context: { job: { id } } });

  test("the token's job must be context.job.id; it becomes verified.job", () => {
    const id = jwt("job");
    expect(id.verify(job("job_1"), NOW_NS, principal("alice", [], "job_1")).job).toEqual({
      id: "job_1",
      method: "jwt",
    });
    for (const [req, why] of [
      [job("job_2"), 'context.job.id must be the token\'s job "job_1" (claim "job")'],
      [
        unitRequest({ context: { job: {} } }),
        'context.job.id must be the token\'s job "job_1" (claim "job")',
      ],
      [
        { ...unitRequest(), context: {} },
        'context.job.id must be the token\'s job "job_1" (claim "job")',
      ],
    ] as const) {
      const err = refused(() => id.verify(req, NOW_NS, principal("alice", [], "job_1")));
      expect([err.code, err.status, err.message]).toEqual(["job_mismatch", 403, why]);
    }
  });

  test("a token without the claim is job_mismatch, whatever the request says", () => {
    const err = refused(() => jwt("job").verify(job("job_1"), NOW_NS, principal("alice")));
    expect(err.code).toBe("job_mismatch");
    expect(err.message).toBe(
      'the bearer token carries no job claim "job" (identity.jwt.job_claim)',
    );
  });

  test("without the setting, no job is verified: the request's job is the caller's word", () => {
    const v = jwt().verify(job("job_9"), NOW_NS, principal("alice", [], "job_1"));
    expect(v).not.toHaveProperty("job");
    expect(trusted.verify(job("job_9"), NOW_NS)).not.toHaveProperty("job");
  });
});
