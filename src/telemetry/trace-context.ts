/**
 * The caller's W3C trace context (`traceparent`, `tracestate`), read on the
 * decision path without the OpenTelemetry SDK: the main thread hands the
 * audit worker a plain SpanRef, and the SDK (with @opentelemetry/core and the
 * semantic conventions, ~3 MB resident) is loaded only where spans are made
 * (issue #20, idle RSS).
 *
 * The rules are W3C Trace Context level 1 as OpenTelemetry's
 * W3CTraceContextPropagator and TraceState apply them, so a header is
 * accepted, refused or trimmed exactly as before
 * (test/unit/trace-context.test.ts compares the two on generated headers):
 * - traceparent: `vv-<32 hex>-<16 hex>-ff`, lower-case hex, version `ff`
 *   refused, an all-zero trace or span id refused, version `00` with trailing
 *   fields refused, one optional blank at either end; of several headers, the
 *   first;
 * - tracestate: several headers joined with `,`; members `key=value`, each
 *   trimmed, an invalid key or value skipped, at most 32 members and 512
 *   characters kept (in order), empty when none is left.
 */
import type { SpanRef } from "../model";

type Headers = Record<string, string | string[] | undefined>;

const TRACE_PARENT =
  /^\s?((?!ff)[\da-f]{2})-((?![0]{32})[\da-f]{32})-((?![0]{16})[\da-f]{16})-([\da-f]{2})(-.*)?\s?$/;
const KEY_CHARS = "[_0-9a-z-*/]";
const VALID_KEY = new RegExp(
  `^(?:[a-z]${KEY_CHARS}{0,255}|[a-z0-9]${KEY_CHARS}{0,240}@[a-z]${KEY_CHARS}{0,13})$`,
);
const VALID_VALUE = /^[ -~]{0,255}[!-~]$/;
const MAX_MEMBERS = 32;
const MAX_LENGTH = 512;

/** The span the caller's `traceparent` (and `tracestate`) name, when valid. */
export function traceParentOf(headers: Headers): SpanRef | undefined {
  const header = headers.traceparent;
  const raw = Array.isArray(header) ? header[0] : header;
  if (typeof raw !== "string") return undefined;
  const m = TRACE_PARENT.exec(raw);
  if (m === null || (m[1] === "00" && m[5] !== undefined)) return undefined;
  const ref: SpanRef = {
    traceId: m[2] as string,
    spanId: m[3] as string,
    traceFlags: parseInt(m[4] as string, 16),
  };
  const stateHeader = headers.tracestate;
  if (stateHeader !== undefined) {
    const state = normalizeTraceState(
      Array.isArray(stateHeader) ? stateHeader.join(",") : stateHeader,
    );
    if (state !== "") ref.traceState = state;
  }
  return ref;
}

/** A tracestate's valid members, in order, within 32 members and 512 characters. */
export function normalizeTraceState(raw: string): string {
  const kept: string[] = [];
  const seen = new Map<string, number>();
  let length = 0;
  for (const member of raw.split(",")) {
    const m = member.trim();
    const eq = m.indexOf("=");
    if (eq === -1) continue;
    const key = m.slice(0, eq);
    const value = m.slice(eq + 1);
    if (!VALID_KEY.test(key) || !VALID_VALUE.test(value) || /[,=]/.test(value)) continue;
    const next = length + m.length + (seen.size > 0 ? 1 : 0);
    if (next > MAX_LENGTH) continue;
    const at = seen.get(key);
    if (at === undefined) {
      seen.set(key, kept.length);
      kept.push(`${key}=${value}`);
    } else {
      kept[at] = `${key}=${value}`; // a repeated key keeps its first place and its last value
    }
    length = next;
    if (seen.size >= MAX_MEMBERS) break;
  }
  return kept.join(",");
}
