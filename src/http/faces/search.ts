/**
 * AuthZEN 1.0 Action Search (POST /access/v1/search/action): which tools may
 * this subject use on this resource in this context. Every tool the active
 * bundle registers (`data.toolgate.deployment.tools`) is previewed by the
 * Decider — no arguments, nothing recorded, granted or reserved — and the
 * allowed ones are listed; needs_approval ones are listed and marked; ones
 * denied only for their (absent) arguments are listed and marked
 * `depends_on_arguments`; other denied ones are left out. Paging as the spec says: `page.limit`, and an opaque
 * `next_token` ("" on the last page) bound to the query it continues.
 */
import { createHash } from "node:crypto";
import type { Decider, DecisionRequest, RequestContext } from "../../decision";
import { toolgateError } from "../../errors";
import { isObject } from "../../shared/guards";
import { canonicalize } from "../../shared/jcs";
import type { OrderedMap } from "../../shared/ordered-map";

export interface ActionSearchRequest {
  subject: DecisionRequest["subject"];
  resource: DecisionRequest["resource"];
  context?: Record<string, unknown>;
  page?: { token?: string; limit?: number; properties?: Record<string, unknown> };
}

export interface ActionSearchResult {
  name: string;
  properties?:
    | { needs_approval: true; approval?: unknown }
    | { depends_on_arguments: true; reasons: string[] };
}

/**
 * Deny reasons about the call's arguments: a search evaluates without any,
 * so a tool denied for these alone may still be allowed with the right
 * arguments — it is listed, marked `depends_on_arguments`.
 */
export const ARGUMENT_REASONS: ReadonlySet<string> = new Set([
  "invalid_arguments",
  "limit_exceeded",
]);

/** Results per page at most (and by default). */
export const MAX_SEARCH_PAGE = 1000;
/** Registered tools considered at most: a bundle registering more is searched over its first ones (sorted). */
export const MAX_SEARCH_TOOLS = 2000;

/**
 * The results of a first page, kept for its next pages (keyed by the query
 * digest, the caller and the policy revision) for PAGE_CACHE_MS: paging
 * through N tools costs one evaluation of each, not one per page. A first
 * page is always evaluated afresh.
 */
const PAGE_CACHE_MS = 10_000;
const PAGE_CACHE_MAX = 256;
/** One port's first pages, for their next pages (see PAGE_CACHE_MS). */
export type SearchPages = OrderedMap<
  string,
  { at: number; policy: { bundle: string; revision: string }; found: ActionSearchResult[] }
>;

/** The tools a bundle registers: the keys of data.toolgate.deployment.tools, sorted. */
export function registeredTools(data: unknown): string[] {
  const tools = obj(obj(obj(data)?.toolgate)?.deployment)?.tools;
  if (!isObject(tools)) return [];
  return Object.keys(tools)
    .filter((k) => k.length > 0 && k.length <= 256)
    .sort()
    .slice(0, MAX_SEARCH_TOOLS);
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return isObject(v) ? v : undefined;
}

/** What a page token is bound to: the query's entities and limit (the spec: identical on later pages). */
function queryDigest(req: ActionSearchRequest, limit: number | undefined): string {
  const q = { subject: req.subject, resource: req.resource, context: req.context ?? null, limit };
  return createHash("sha256").update(canonicalize(q)).digest("base64url").slice(0, 22);
}

function pageToken(offset: number, digest: string): string {
  return Buffer.from(JSON.stringify({ o: offset, q: digest })).toString("base64url");
}

function tokenOffset(token: string, digest: string): number {
  const bad = () =>
    toolgateError(
      "invalid_request",
      "page/token is not a next_token of this query (the subject, resource, context and page/limit must stay the same)",
    );
  if (!/^[A-Za-z0-9_-]{1,512}$/.test(token)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (!isObject(parsed) || parsed.q !== digest) throw bad();
  const o = parsed.o;
  if (typeof o !== "number" || !Number.isSafeInteger(o) || o < 0) throw bad();
  return o;
}

/** POST /access/v1/search/action, over the tools `tools` (registeredTools of the active bundle). */
export function actionSearch(
  decider: Decider,
  req: ActionSearchRequest,
  tools: readonly string[],
  ctx: RequestContext,
  pages: SearchPages,
): Record<string, unknown> {
  const limit = req.page?.limit;
  const digest = queryDigest(req, limit);
  const offset = req.page?.token === undefined ? 0 : tokenOffset(req.page.token, digest);
  const base: Omit<DecisionRequest, "action"> = { subject: req.subject, resource: req.resource };
  if (req.context !== undefined) base.context = req.context;
  const cacheKey = `${digest}|${ctx.principal?.id ?? ""}`;
  const cached = offset > 0 ? pages.get(cacheKey) : undefined;
  const { policy, found } =
    cached !== undefined && Date.now() - cached.at < PAGE_CACHE_MS
      ? cached
      : evaluate(decider, base, tools, ctx);
  if (offset === 0) {
    pages.delete(cacheKey);
    pages.set(cacheKey, { at: Date.now(), policy, found });
    if (pages.size > PAGE_CACHE_MAX) pages.shift();
  }
  const size = Math.min(limit ?? MAX_SEARCH_PAGE, MAX_SEARCH_PAGE);
  const page = found.slice(offset, offset + size);
  const more = offset + page.length < found.length && size > 0;
  const out: Record<string, unknown> = {};
  if (limit !== undefined || more || offset > 0) {
    out.page = {
      next_token: more ? pageToken(offset + page.length, digest) : "",
      count: page.length,
      total: found.length,
    };
  }
  out.context = { policy };
  out.results = page;
  return out;
}

/** Every tool previewed; the listed ones with their marks. */
function evaluate(
  decider: Decider,
  base: Omit<DecisionRequest, "action">,
  tools: readonly string[],
  ctx: RequestContext,
): { policy: { bundle: string; revision: string }; found: ActionSearchResult[] } {
  const { policy, results } = decider.preview(base, tools, ctx);
  const found: ActionSearchResult[] = [];
  for (const r of results) {
    if (r.outcome === "allow") found.push({ name: r.name });
    else if (r.outcome === "deny") {
      const codes = [...new Set(r.reasons.map((x) => x.code))];
      if (codes.length > 0 && codes.every((c) => ARGUMENT_REASONS.has(c)))
        found.push({ name: r.name, properties: { depends_on_arguments: true, reasons: codes } });
    } else if (r.outcome === "needs_approval") {
      found.push({
        name: r.name,
        properties: {
          needs_approval: true,
          ...(r.approval === undefined ? {} : { approval: r.approval }),
        },
      });
    }
  }
  return { policy, found };
}
