/**
 * From a `tools/call` to toolgate's decision request: the session's subject,
 * resource and context, then the tool's `x-authzen-mapping` (COAZ-MCP) where
 * its server declares one and the server is trusted to, then the proxy's own
 * per-tool mapping (config `tools.<name>`), which wins.
 *
 * COAZ-MCP subset (docs/mcp.md): `x-authzen-mapping` in a tool's
 * `inputSchema`, either the request object itself or `{evaluation: {...}}`.
 * Honoured members: `resource.type`, `resource.id`, and `context.*` string
 * members (not `context.approval`/`context.agent`). Each value is a CEL-style
 * expression of the two forms the examples use: a quoted literal (`'customer'`)
 * or a path into the call (`params.arguments.customer_id`, also
 * `$params.arguments.x`, `params.name`); other expressions are refused (the
 * tool is listed, its calls fail closed). `subject` and `action` are never
 * taken from the upstream: the subject is the session's, the action is the
 * tool's name as the proxy publishes it — a hostile server cannot rename
 * itself into a permitted action or act for someone else.
 */
import type { DecisionRequest, Entity } from "../client";
import { isObject } from "../shared/guards";
import type { Mapped, ToolMapping } from "./config";

/** A COAZ mapping the proxy can apply: literal or argument-path per field. */
export interface SchemaMapping {
  resource: { type?: Expr; id?: Expr };
  context: Record<string, Expr>;
}

type Expr = { literal: string } | { path: string[] };

/** A mapping failure: the call is refused with this message (code mcp_mapping_failed). */
export class MappingError extends Error {
  override readonly name = "MappingError";
}

const PATH_SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]{0,127}$/;
const CONTEXT_KEY = /^[a-z_][a-z0-9_]{0,63}$/;
const RESERVED_CONTEXT = new Set(["approval", "agent", "job"]);

function parseExpr(v: unknown): Expr | undefined {
  if (typeof v !== "string" || v.length > 512) return undefined;
  const lit = /^'([^'\\]{0,256})'$/.exec(v) ?? /^"([^"\\]{0,256})"$/.exec(v);
  if (lit) return { literal: lit[1] as string };
  const p = v.replace(/^\$/, "").split(".");
  if (p[0] !== "params" || p.length < 2 || p.length > 9) return undefined;
  if (!p.every((s) => PATH_SEGMENT.test(s))) return undefined;
  if (p[1] !== "arguments" && !(p[1] === "name" && p.length === 2)) return undefined;
  return { path: p.slice(1) };
}

/**
 * The tool's declared COAZ mapping, read once from its (already copied)
 * input schema: undefined when it declares none, an Error when it declares
 * one the proxy cannot apply (calls of that tool then fail closed).
 */
export function readSchemaMapping(inputSchema: unknown): SchemaMapping | Error | undefined {
  if (!isObject(inputSchema)) return undefined;
  let m: unknown = inputSchema["x-authzen-mapping"];
  if (m === undefined) return undefined;
  if (isObject(m) && isObject(m.evaluation)) m = m.evaluation;
  if (!isObject(m))
    return new Error("x-authzen-mapping is not an object (or {evaluation: object})");
  if (m.evaluations !== undefined)
    return new Error("x-authzen-mapping with several evaluations is not supported");
  const out: SchemaMapping = { resource: {}, context: Object.create(null) as Record<string, Expr> };
  if (m.resource !== undefined) {
    if (!isObject(m.resource)) return new Error("x-authzen-mapping.resource is not an object");
    for (const f of ["type", "id"] as const) {
      if (m.resource[f] === undefined) continue;
      const e = parseExpr(m.resource[f]);
      if (e === undefined)
        return new Error(`x-authzen-mapping.resource.${f}: unsupported expression`);
      out.resource[f] = e;
    }
  }
  if (m.context !== undefined) {
    if (!isObject(m.context)) return new Error("x-authzen-mapping.context is not an object");
    for (const [k, v] of Object.entries(m.context)) {
      if (!CONTEXT_KEY.test(k) || RESERVED_CONTEXT.has(k)) continue; // never the proxy's own keys
      const e = parseExpr(v);
      if (e === undefined) continue; // token.* and other expressions: nothing the proxy can supply
      out.context[k] = e;
    }
  }
  return out;
}

/** RFC 6901: the value at `pointer` in `doc` (own members only), or undefined. */
export function atPointer(doc: unknown, pointer: string): unknown {
  if (pointer === "") return doc;
  let cur: unknown = doc;
  for (const raw of pointer.slice(1).split("/")) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(cur)) {
      if (!/^(0|[1-9][0-9]{0,8})$/.test(seg)) return undefined;
      cur = cur[Number(seg)];
    } else if (isObject(cur) && Object.prototype.hasOwnProperty.call(cur, seg)) cur = cur[seg];
    else return undefined;
  }
  return cur;
}

function scalar(v: unknown, what: string): string {
  if (typeof v === "string" && v !== "" && v.length <= 256) return v;
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  throw new MappingError(`${what}: the call's arguments give no usable value (a string or number)`);
}

function fromMapped(m: Mapped, args: Record<string, unknown>, what: string): string {
  if (typeof m === "string") return m;
  return scalar(atPointer(args, m.arg), `${what} (argument ${m.arg || "/"})`);
}

function fromExpr(
  e: Expr,
  call: { name: string; arguments: Record<string, unknown> },
  what: string,
): string {
  if ("literal" in e) return e.literal;
  const [head, ...rest] = e.path;
  if (head === "name") return call.name;
  return scalar(
    atPointer(call.arguments, rest.length ? "/" + rest.join("/") : ""),
    `${what} (params.${e.path.join(".")})`,
  );
}

export interface CallInput {
  /** The action name the proxy publishes (tool, or `<server>.<tool>`). */
  action: string;
  /** The upstream's own tool name (what `params.name` means in a COAZ mapping). */
  upstreamName: string;
  arguments: Record<string, unknown>;
}

/** The decision request for one call. Throws MappingError when a mapping cannot be applied. */
export function buildRequest(
  session: { subject: Entity; resource: Entity; context: Record<string, unknown> },
  call: CallInput,
  schema: SchemaMapping | undefined,
  mapping: ToolMapping | undefined,
): DecisionRequest {
  const resource: Entity = structuredClone(session.resource);
  const context = structuredClone(session.context) as NonNullable<DecisionRequest["context"]>;
  const coazCall = { name: call.upstreamName, arguments: call.arguments };
  if (schema !== undefined) {
    if (schema.resource.type)
      resource.type = fromExpr(schema.resource.type, coazCall, "x-authzen-mapping resource.type");
    if (schema.resource.id)
      resource.id = fromExpr(schema.resource.id, coazCall, "x-authzen-mapping resource.id");
    for (const [k, e] of Object.entries(schema.context))
      context[k] = fromExpr(e, coazCall, `x-authzen-mapping context.${k}`);
  }
  if (mapping?.resource?.type !== undefined)
    resource.type = fromMapped(mapping.resource.type, call.arguments, "resource.type");
  if (mapping?.resource?.id !== undefined)
    resource.id = fromMapped(mapping.resource.id, call.arguments, "resource.id");
  if (mapping?.job !== undefined) {
    // literals only (the config refuses {arg}): the agent never picks its job
    const job = { ...(isObject(context.job) ? context.job : {}) } as Record<string, unknown>;
    for (const [k, v] of Object.entries(mapping.job)) if (typeof v === "string") job[k] = v;
    context.job = job;
  }
  return {
    subject: structuredClone(session.subject),
    action: { name: call.action, properties: { arguments: call.arguments } },
    resource,
    context,
  };
}

/**
 * Whether calls of a tool name the record they touch: the proxy's mapping or
 * the tool's COAZ mapping gives `resource.id` (from the arguments or a
 * literal). Without one, every call is decided on the session's resource
 * whatever record its arguments name — `require_mapping: true` refuses those.
 */
export function mapsResource(
  schema: SchemaMapping | Error | undefined,
  mapping: ToolMapping | undefined,
): boolean {
  if (mapping?.resource?.id !== undefined) return true;
  return schema !== undefined && !(schema instanceof Error) && schema.resource.id !== undefined;
}
