import type { Principal } from "./verified";

/** Which API a decision came through. */
export type Face = "native" | "authzen" | "opa" | "cli";

/** A span's W3C ids (32 and 16 lower-case hex digits). */
export interface SpanIds {
  traceId: string;
  spanId: string;
}

/**
 * A span context as plain data, as a W3C traceparent header carries it
 * (with the tracestate header's text): the caller's trace parent, or the
 * decision span an action report or approval event links to.
 */
export interface SpanRef extends SpanIds {
  /** The W3C trace flags (bit 0: sampled). */
  traceFlags: number;
  /** The W3C tracestate text, when not empty. */
  traceState?: string;
}

/**
 * Where a request came from and who sent it: what the faces know of a
 * decision request beyond its body, built once per HTTP request (or CLI
 * call) and never changed afterwards. Audit reads it; nobody writes it.
 */
export interface RequestContext {
  readonly face: Face;
  /** The X-Request-ID the response carries (the caller's, or one toolgate drew). */
  readonly requestId?: string;
  /** performance.timeOrigin + performance.now() when the request arrived, in ms. */
  readonly startTimeMs?: number;
  readonly http?: { readonly method: string; readonly path: string } | undefined;
  /** The caller's verified token (identity mode jwt). */
  readonly principal?: Principal;
  /** The caller's trace context (traceparent / tracestate), when valid. */
  readonly traceParent?: SpanRef | undefined;
  /**
   * An AuthZEN batch's request span: the items' spans are its children. Set
   * on the items' copy of the context by audit's startRequestSpan.
   */
  readonly requestSpan?: SpanIds;
}
