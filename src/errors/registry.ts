/**
 * The one registry of toolgate's error codes. Every error toolgate raises or
 * returns carries one of these codes; HTTP faces render it as
 * `{ "code": ..., "message": ... }` with the status below. The test
 * `test/unit/errors.test.ts` keeps this table, the code base and
 * `docs/errors.md` in step.
 */
export const ERRORS = {
  // -- request errors (client mistakes: always 4xx) --------------------------
  unsupported_content_type: { status: 400, message: "Content-Type must be application/json" },
  malformed_json: { status: 400, message: "the request body is not valid JSON" },
  body_too_large: { status: 413, message: "the request body exceeds the size limit" },
  nesting_too_deep: { status: 400, message: "the request body nests deeper than the limit" },
  forbidden_key: { status: 400, message: "the request body contains a forbidden key" },
  duplicate_key: {
    status: 400,
    message: "the request body has an object with the same key twice (I-JSON, RFC 7493)",
  },
  invalid_request: { status: 400, message: "the request does not match the schema" },
  agent_mismatch: {
    status: 403,
    message: "the request names an agent other than the one this sidecar serves",
  },
  unauthenticated: { status: 401, message: "a valid bearer token is required" },
  forbidden: { status: 403, message: "the caller lacks the role this needs" },
  invalid_denial_binding: {
    status: 400,
    message: "the access request differs from the evaluation it cites",
  },
  subject_mismatch: {
    status: 403,
    message: "subject.id does not match the verified token's subject",
  },
  job_mismatch: {
    status: 403,
    message: "context.job.id does not match the verified token's job claim",
  },
  not_found: { status: 404, message: "no such route" },
  action_unknown_decision: {
    status: 409,
    message: "the action report names no recent decision of this sidecar",
  },
  action_not_allowed: {
    status: 409,
    message: "the action report names a decision that was not allow",
  },
  action_already_reported: { status: 409, message: "the decision's action was already reported" },
  action_tool_mismatch: {
    status: 409,
    message: "the action report names another tool than the one decided",
  },
  method_not_allowed: { status: 405, message: "method not allowed on this route" },
  // -- policy availability / evaluation --------------------------------------
  policy_unavailable: {
    status: 503,
    message: "no policy bundle is active; every decision is deny",
  },
  policy_evaluation_failed: { status: 500, message: "policy evaluation failed" },
  policy_output_invalid: { status: 500, message: "the policy returned a malformed decision" },
  unknown_obligation: {
    status: 500,
    message: "the policy returned an obligation toolgate does not know",
  },
  // -- bundles ----------------------------------------------------------------
  bundle_not_found: { status: 500, message: "the bundle file or directory does not exist" },
  bundle_unreadable: { status: 500, message: "the bundle archive cannot be read" },
  bundle_too_large: { status: 500, message: "the bundle exceeds the size limit" },
  manifest_invalid: { status: 500, message: "the bundle manifest is invalid" },
  bundle_data_invalid: { status: 500, message: "a data file in the bundle is invalid" },
  entrypoint_missing: {
    status: 500,
    message: "the bundle does not provide the required wasm entrypoint",
  },
  wasm_invalid: { status: 500, message: "the bundle's policy.wasm cannot be instantiated" },
  bundle_download_failed: {
    status: 502,
    message: "the bundle could not be downloaded (network error, timeout or an HTTP error status)",
  },
  bundle_unsigned: {
    status: 500,
    message: "the bundle has no .signatures.json but signature verification is configured",
  },
  bundle_signature_invalid: {
    status: 500,
    message: "the bundle's signature is malformed or does not verify with the configured key",
  },
  bundle_key_unknown: {
    status: 500,
    message:
      "no configured verification key matches the bundle's signature (or none is configured)",
  },
  bundle_scope_mismatch: {
    status: 500,
    message: "the bundle's signature carries another scope than the configured one",
  },
  bundle_files_mismatch: {
    status: 500,
    message: "the bundle's files are not exactly the files its signature lists",
  },
  bundle_digest_mismatch: {
    status: 500,
    message: "a bundle file's digest differs from the one its signature lists",
  },
  bundle_persist_failed: {
    status: 500,
    message: "the last-known-good bundle could not be written to or read from disk",
  },
  // -- local audit trail -------------------------------------------------------
  audit_write_failed: {
    status: 500,
    message: "writing the audit trail failed; records are kept in memory and retried",
  },
  audit_backlog_overflow: {
    status: 500,
    message: "more audit records wait to be written than the buffer limit; none are dropped",
  },
  audit_record_invalid: { status: 500, message: "an audit record is not plain JSON" },
  audit_trail_closed: { status: 500, message: "the audit trail is closed" },
  audit_trail_unreadable: {
    status: 500,
    message: "the audit trail directory or file cannot be read or created",
  },
  // -- configuration and CLI --------------------------------------------------
  config_invalid: { status: 500, message: "the configuration is invalid" },
  config_unreadable: { status: 500, message: "the configuration file cannot be read" },
  port_in_use: {
    status: 500,
    message: "a port toolgate should listen on is already in use by another process",
  },
  usage: { status: 400, message: "invalid command-line usage" },
  internal_error: { status: 500, message: "internal error" },
  // -- approvals (AuthZEN Access Request and Approval profile) ----------------
  approval_not_found: { status: 404, message: "no such approval task or evaluation" },
  approval_not_pending: { status: 409, message: "the approval task is no longer pending" },
  approval_not_approved: { status: 409, message: "the approval task is not approved" },
  approval_expired: { status: 410, message: "the approval task or its evaluation has expired" },
  idempotency_conflict: {
    status: 409,
    message: "the Idempotency-Key was already used for another request",
  },
  access_request_closed: {
    status: 409,
    message:
      "the evaluation's access request was denied, cancelled or expired; evaluate again to ask anew",
  },
  access_request_rate_limited: {
    status: 429,
    message: "this initiator has too many open or refused access requests; retry later",
  },
  plan_denied: {
    status: 409,
    message: "a call of the plan is denied by the policy; the plan is refused",
  },
  plan_unneeded: {
    status: 409,
    message: "no call of the plan needs an approval; the plan is refused",
  },
  approval_store_unavailable: {
    status: 503,
    message: "the approval store cannot be opened, read or written",
  },
  json_not_canonicalizable: {
    status: 400,
    message: "a value cannot be canonicalized (RFC 8785 JCS)",
  },
  // -- grants (raised by the backend verifier, toolgate/verify) --------------
  grant_malformed: { status: 401, message: "the grant is missing or not a well-formed grant JWS" },
  grant_signature_invalid: { status: 401, message: "the grant's signature does not verify" },
  grant_key_unknown: { status: 401, message: "the grant names a key the JWKS does not hold" },
  grant_keys_unavailable: { status: 503, message: "the grant keys (JWKS) cannot be fetched" },
  grant_expired: { status: 401, message: "the grant has expired" },
  grant_not_yet_valid: { status: 401, message: "the grant is not valid yet" },
  grant_audience_mismatch: { status: 403, message: "the grant is for another tool backend" },
  grant_issuer_mismatch: { status: 401, message: "the grant comes from another issuer" },
  grant_binding_mismatch: {
    status: 403,
    message: "the request differs from the one the grant authorizes",
  },
  grant_replayed: { status: 409, message: "the single-use grant was already used" },
  grant_scope_violation: { status: 403, message: "the request exceeds the grant's scope" },
  // -- MCP proxy (toolgate mcp; reason codes in its tool errors) ---------------
  mcp_upstream_unavailable: {
    status: 502,
    message: "an upstream MCP server could not be started, reached or called",
  },
  mcp_unknown_tool: { status: 404, message: "no upstream MCP server offers this tool" },
  mcp_mapping_failed: {
    status: 400,
    message: "the tool's resource/job mapping cannot be applied to the call's arguments",
  },
  mcp_result_too_large: {
    status: 502,
    message: "the upstream tool's result exceeds the proxy's size limit",
  },
  mcp_sidecar_unavailable: {
    status: 503,
    message: "the toolgate sidecar could not be asked; the tool call was not made",
  },
  // -- containment (kill switches, rate limits, budgets) ----------------------
  killswitch_not_found: { status: 404, message: "no such active kill switch" },
  containment_store_unavailable: {
    status: 503,
    message: "the containment store cannot be opened, read or written",
  },
  limits_invalid: {
    status: 500,
    message: "the bundle's data.toolgate.deployment.limits is malformed",
  },
  // -- fleet (toolgate control) -----------------------------------------------
  fleet_store_unavailable: {
    status: 503,
    message: "the fleet store (PostgreSQL) cannot be reached, migrated, read or written",
  },
  fleet_unavailable: {
    status: 503,
    message: "the fleet's control service cannot be reached or gave no usable answer",
  },
  fleet_stream_limit: {
    status: 429,
    message:
      "this replica holds as many kill-switch streams as it serves for this agent (or in all); retry later",
  },
  fleet_mode: {
    status: 409,
    message:
      "this sidecar is in fleet mode: approvals and kill switches are decided on the control service",
  },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * The third argument of `toolgateError` / `new ToolgateError`. `cause` is
 * what was caught and wrapped (an Error, or whatever was thrown): it becomes
 * the standard, non-enumerable `cause`, for debugging, and is never rendered —
 * `toJSON` (what HTTP bodies and JSON logs show) is `{code, message}` only.
 * Every other member is a detail (`details`), which a face may render
 * (`retry_after`) or a caller read (`errors`).
 */
export type ToolgateErrorOptions = { cause?: unknown } & Record<string, unknown>;

export class ToolgateError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, options?: ToolgateErrorOptions) {
    const { cause, ...details } = options ?? {};
    super(
      message ?? ERRORS[code].message,
      options !== undefined && "cause" in options ? { cause } : undefined,
    );
    this.name = "ToolgateError";
    this.code = code;
    this.status = ERRORS[code].status;
    this.details = Object.keys(details).length > 0 ? details : undefined;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Creates a coded error; the message defaults to the registry's. */
export function toolgateError(
  code: ErrorCode,
  message?: string,
  options?: ToolgateErrorOptions,
): ToolgateError {
  return new ToolgateError(code, message, options);
}

export function isToolgateError(e: unknown): e is ToolgateError {
  return e instanceof ToolgateError;
}

/**
 * `fn()`'s value; whatever it throws becomes a `code` error
 * "<what>: <the thrown message>" that keeps what was thrown as its cause. For
 * reading or parsing one named thing:
 * `rethrowAs("config_invalid", \`x_file: cannot read ${path}\`, () => readFileSync(path))`.
 */
export function rethrowAs<T>(code: ErrorCode, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new ToolgateError(code, `${what}: ${normalizeError(e).message}`, { cause: e });
  }
}

/**
 * Turns anything thrown into a ToolgateError. opa-wasm throws plain strings
 * (and sometimes `{message}` objects); those become `fallback` with the thrown
 * text as message. What was thrown is kept as the new error's `cause`.
 */
export function normalizeError(e: unknown, fallback: ErrorCode = "internal_error"): ToolgateError {
  if (e instanceof ToolgateError) return e;
  const cause = { cause: e };
  if (typeof e === "string") return new ToolgateError(fallback, e, cause);
  if (e instanceof Error) return new ToolgateError(fallback, e.message, cause);
  if (
    e !== null &&
    typeof e === "object" &&
    typeof (e as { message?: unknown }).message === "string"
  ) {
    return new ToolgateError(fallback, (e as { message: string }).message, cause);
  }
  return new ToolgateError(fallback, `${fallback}: ${String(e)}`, cause);
}
