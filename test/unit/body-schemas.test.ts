/**
 * The schemas the control port's bodies and the access request are checked
 * against where they arrive (src/http/validate.ts): the same ajv as the
 * decision request, saying what Containment.createSwitch, the approve/deny
 * route and ApprovalService.submit said when they checked the bodies by hand.
 */
import { isToolgateError } from "../../src/errors";
import { validator } from "../../src/shared/validate";

const killSwitch = validator("kill-switch.schema.json");
const approvalDecision = validator("approval-decision.schema.json");
const accessRequest = validator("access-request.schema.json");

/** The message of the invalid_request `check` throws, or "valid". */
function said(check: (v: unknown) => unknown, value: unknown): string {
  try {
    check(value);
    return "valid";
  } catch (e) {
    if (!isToolgateError(e) || e.code !== "invalid_request") throw e;
    return e.message;
  }
}

const REASON = "reason must be a non-empty string (≤ 2000 chars)";
const smile = "\u{1F600}"; // one code point, two UTF-16 code units

describe("kill-switch.schema.json", () => {
  test.each([
    ["an array", [], "the body must be a JSON object"],
    ["a string", "stop", "the body must be a JSON object"],
    ["null", null, "the body must be a JSON object"],
    ["an unknown member", { comment: 5 }, 'unknown member "comment"'],
    // named before the missing reason
    ["an unknown member, no reason", { scope: { tool: "x" }, extra: 1 }, 'unknown member "extra"'],
    ["scope an array", { scope: [], reason: "r" }, "scope must be an object"],
    ["scope a string", { scope: "tool", reason: "r" }, "scope must be an object"],
    [
      "an unknown scope member",
      { scope: { colour: "red" }, reason: "r" },
      "scope.colour is unknown; scope may name agent, tool, subject, job",
    ],
    [
      "scope.tool empty",
      { scope: { tool: "" }, reason: "r" },
      "scope.tool must be a non-empty string",
    ],
    [
      "scope.job a number",
      { scope: { job: 7 }, reason: "r" },
      "scope.job must be a non-empty string",
    ],
    [
      "scope.subject of 257 characters",
      { scope: { subject: "s".repeat(257) }, reason: "r" },
      "scope.subject must be a non-empty string",
    ],
    [
      "scope.agent of 258 UTF-16 code units (129 code points)",
      { scope: { agent: smile.repeat(129) }, reason: "r" },
      "scope.agent must be a non-empty string",
    ],
    ["no reason", { scope: { tool: "x" } }, REASON],
    ["reason empty", { reason: "" }, REASON],
    ["reason blank", { reason: " \t\u00a0" }, REASON],
    ["reason a number", { reason: 5 }, REASON],
    ["reason of 2001 characters", { reason: "r".repeat(2001) }, REASON],
    ["reason of 2002 UTF-16 code units", { reason: smile.repeat(1001) }, REASON],
    [
      "expires_at a number",
      { reason: "r", expires_at: 5 },
      "expires_at must be an RFC 3339 date-time",
    ],
  ])("%s: refused", (_name, body, message) => {
    expect(said(killSwitch, body)).toBe(message);
  });

  test.each([
    ["a reason alone", { reason: "r" }],
    ["scope null", { scope: null, reason: "r" }],
    ["2000 characters, expires_at null", { scope: {}, reason: "r".repeat(2000), expires_at: null }],
    [
      "every scope member, 2000 UTF-16 code units",
      { scope: { agent: "a", tool: "t", subject: "s", job: "j" }, reason: smile.repeat(1000) },
    ],
    // what the date says is the switch's to judge (Containment.createSwitch)
    ["expires_at any string", { reason: "r", expires_at: "tomorrow" }],
  ])("%s: a kill switch's shape", (_name, body) => {
    expect(said(killSwitch, body)).toBe("valid");
  });
});

describe("approval-decision.schema.json", () => {
  const COMMENT = "comment must be a string of at most 2000 characters";
  test.each([[{}], [{ comment: "ok" }], [{ comment: "ok", other: 1 }], [[]], ["ok"], [5], [null]])(
    "%j: accepted (a body that is no object is ignored)",
    (body) => {
      expect(said(approvalDecision, body)).toBe("valid");
    },
  );
  test.each([
    ["a number", { comment: 5 }],
    ["null", { comment: null }],
    ["of 2001 characters", { comment: "c".repeat(2001) }],
    ["of 2002 UTF-16 code units", { comment: smile.repeat(1001) }],
  ])("comment %s: refused", (_name, body) => {
    expect(said(approvalDecision, body)).toBe(COMMENT);
  });
});

describe("access-request.schema.json", () => {
  const request = {
    subject: { type: "user", id: "alice" },
    action: { name: "refunds.issue", properties: { arguments: { amount: 120 } } },
    resource: { type: "customer", id: "cust_1" },
  };
  const DENIAL = "denial.evaluation_id is required: the needs_approval answer this request follows";
  test.each([[{}], [{ denial: {} }], [{ denial: "ev_1" }], [{ denial: { evaluation_id: 5 } }]])(
    "%j: refused",
    (extra) => {
      expect(said(accessRequest, { ...request, ...extra })).toBe(DENIAL);
    },
  );
  test("a decision request and the evaluation it follows", () => {
    expect(said(accessRequest, { ...request, denial: { evaluation_id: "ev_1" } })).toBe("valid");
  });
  test("the decision request's own messages", () => {
    const bad = { ...request, subject: { type: "user", id: 5 }, denial: { evaluation_id: "e" } };
    expect(said(accessRequest, bad)).toBe("subject/id must be string");
  });
});
