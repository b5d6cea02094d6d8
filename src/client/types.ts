/**
 * The wire shapes of toolgate's agent port, as the client sends and reads
 * them. Self-contained on purpose (no import from the server's modules): a
 * consumer of `toolgate/client` never pulls the server's declarations.
 * test/unit/client-types.test.ts checks them against docs/openapi.yaml and
 * schemas/*.schema.json.
 */

/** A subject or a resource (AuthZEN entity). Unknown members reach the policy as sent. */
export interface Entity {
  type: string;
  id: string;
  properties?: Record<string, unknown>;
}

/** A request's context: the job, and (re-asking) the approval. Unknown members reach the policy. */
export interface DecisionContext {
  job?: { id?: string; purpose?: string; customer_id?: string; [key: string]: unknown };
  agent?: { id?: string; [key: string]: unknown };
  /** The agent session this call belongs to: the policy sees what the session did before (identity mode jwt: the token's claim wins). */
  session?: { id?: string; [key: string]: unknown };
  [key: string]: unknown;
}

/** The decision request (schemas/decision-request.schema.json). */
export interface DecisionRequest {
  /** The human (or service) the agent acts for. */
  subject: Entity;
  /** The tool call: `name` is the tool, `properties.arguments` its arguments. */
  action: {
    name: string;
    properties?: {
      arguments?: Record<string, unknown>;
      /** The agent's id for this tool call (gen_ai.tool.call.id). */
      call_id?: string;
      [key: string]: unknown;
    };
    [key: string]: unknown;
  };
  /** The record the call touches. */
  resource: Entity;
  /** `job` selects the grant (`purpose`) and the data boundary (`customer_id`); `approval` re-asks with an approval. */
  context?: DecisionContext;
  [key: string]: unknown;
}

/** A stable reason code and a human message (docs/policy-contract.md#reason-codes). */
export interface Reason {
  code: string;
  message: string;
}

/** What the agent must do when it makes the call (`redact`, `grant_scope`). */
export interface Obligation {
  id: string;
  type: string;
  properties?: Record<string, unknown>;
}

/** Who may approve a needs_approval call. */
export interface ApprovalRequirement {
  approver_roles: string[];
  single_use: boolean;
  ttl_seconds: number;
  exclude: string[];
}

/** The native decision (POST /v1/decisions). Only `outcome: "allow"` permits the call. */
export interface Decision {
  decision_id: string;
  outcome: "allow" | "deny" | "needs_approval";
  reasons: Reason[];
  obligations: Obligation[];
  policy: { bundle: string; revision: string };
  evaluated_at: string;
  /** Only on allow (grants enabled): the request-bound grant to pass to the tool backend. */
  grant?: string;
  tool?: { name?: string; class?: string | null; stage?: string | null };
  /** Seconds, on a deny caused by a rate limit or a budget. */
  retry_after?: number;
  /** Only with needs_approval. */
  approval?: ApprovalRequirement;
  /** Only with needs_approval: cite `evaluation_id` in the access request before `expires_at`. */
  access_request?: { evaluation_id: string; expires_at: string };
}

/** An approval to re-ask with (`context.approval`). */
export interface Approval {
  id: string;
  approved_at: string;
  approved_until: string;
  /** The binding hash. */
  state: string;
}

export type TaskStatus = "pending" | "approved" | "denied" | "expired" | "cancelled" | "failed";

/** An access request task (POST/GET /access/v1/requests…). */
export interface AccessRequestTask {
  task: {
    id: string;
    status: TaskStatus;
    status_endpoint: string;
    created_at: string;
    expires_at: string;
    links: { cancel: string };
  };
  /** Only when approved. */
  result?: { mode: "reevaluate"; approval: Approval };
}

/** POST /access/v1/requests: the request that was answered needs_approval, citing that answer. */
export type AccessRequestBody = DecisionRequest & {
  denial: { evaluation_id: string };
  /** ≤ 2000 characters, no control characters but tab and newline. */
  justification?: string;
};

/** A record reference in an action report. */
export interface RecordRef {
  type: string;
  id: string;
}

/** What an allowed call did (POST /v1/actions, schemas/action-report.schema.json). */
export interface ActionReport {
  decision_id: string;
  status: "ok" | "error";
  tool?: string;
  call_id?: string;
  error?: { type?: string; message?: string };
  started_at?: string;
  ended_at?: string;
  read?: RecordRef[];
  changed?: Array<{
    resource: RecordRef;
    fields?: Array<{ path: string; before?: unknown; after?: unknown }>;
  }>;
}

/** POST /access/v1/search/action: which tools may this subject use on this resource. */
export interface ActionSearchRequest {
  subject: Entity;
  resource: Entity;
  context?: DecisionContext;
  page?: { token?: string; limit?: number; properties?: Record<string, unknown> };
}

export interface ActionSearchResponse {
  /** Present when a `limit` was given or more pages remain; `next_token` is "" on the last page. */
  page?: { next_token: string; count: number; total: number };
  context: { policy: { bundle: string; revision: string } };
  /** Allowed tools, and tools that need an approval (marked); denied tools are left out. Sorted by name. */
  results: ActionSearchResult[];
}

/**
 * One tool of an action search: `properties` only on a tool that needs an
 * approval, or whose answer depends on the call's arguments (it was denied
 * only for `invalid_arguments`/`limit_exceeded` when asked without any).
 */
export interface ActionSearchResult {
  name: string;
  properties?: {
    needs_approval?: true;
    approval?: ApprovalRequirement;
    depends_on_arguments?: true;
    reasons?: string[];
  };
}

/** toolgate's error body: `{code, message}` (docs/errors.md). */
export interface ErrorBody {
  code: string;
  message: string;
  retry_after?: number;
}
