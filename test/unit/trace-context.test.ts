/**
 * The decision path reads the caller's W3C trace context without the OTel SDK
 * (src/telemetry/trace-context.ts). It must accept, refuse and trim exactly as
 * OpenTelemetry's W3CTraceContextPropagator and TraceState do: here the real
 * @opentelemetry/core is the reference, on hand-picked and on seeded random
 * hostile headers.
 */
import { ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { TraceState, W3CTraceContextPropagator } from "@opentelemetry/core";
import type { SpanRef } from "../../src/model";
import { normalizeTraceState, traceParentOf } from "../../src/telemetry/trace-context";
import { seededRandom } from "../helpers/rng";

type Headers = Record<string, string | string[] | undefined>;

const propagator = new W3CTraceContextPropagator();
const getter = {
  get: (c: Headers, k: string) => c[k],
  keys: (c: Headers) => Object.keys(c),
};

/** What OTel's propagator makes of the headers, as a SpanRef. */
function reference(headers: Headers): SpanRef | undefined {
  if (headers.traceparent === undefined) return undefined;
  const sc = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, headers, getter));
  if (sc === undefined || !trace.isSpanContextValid(sc)) return undefined;
  const ref: SpanRef = { traceId: sc.traceId, spanId: sc.spanId, traceFlags: sc.traceFlags };
  const state = sc.traceState?.serialize();
  if (state) ref.traceState = state;
  return ref;
}

const TID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SID = "00f067aa0ba902b7";

describe("traceParentOf equals OTel's W3C propagator", () => {
  const cases: Headers[] = [
    {},
    { traceparent: `00-${TID}-${SID}-01` },
    { traceparent: `00-${TID}-${SID}-00`, tracestate: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" },
    { traceparent: ` 00-${TID}-${SID}-01 ` },
    { traceparent: `00-${TID}-${SID}-01-extra` },
    { traceparent: `01-${TID}-${SID}-01-extra` },
    { traceparent: `ff-${TID}-${SID}-01` },
    { traceparent: `00-${"0".repeat(32)}-${SID}-01` },
    { traceparent: `00-${TID}-${"0".repeat(16)}-01` },
    { traceparent: `00-${TID.toUpperCase()}-${SID}-01` },
    { traceparent: `00-${TID}-${SID}-1` },
    { traceparent: [`00-${TID}-${SID}-01`, `00-${TID}-${SID}-00`] },
    { traceparent: [] },
    { traceparent: `00-${TID}-${SID}-01, 00-${TID}-${SID}-01` },
    { traceparent: `00-${TID}-${SID}-01`, tracestate: ["a=1", "b=2,c=3"] },
    { traceparent: `00-${TID}-${SID}-01`, tracestate: [] },
    { traceparent: `00-${TID}-${SID}-01`, tracestate: "" },
    { traceparent: `00-${TID}-${SID}-01`, tracestate: "a=1,a=2,b=3" },
    { traceparent: `00-${TID}-${SID}-01`, tracestate: " a=1 ,, =x,B=2,c==3,d=4 " },
    { traceparent: `00-${TID}-${SID}-01`, tracestate: "t@v=1,0x@y=2,x@1=3,a/b*c_d-e=ok" },
    {
      traceparent: `00-${TID}-${SID}-01`,
      tracestate: Array.from({ length: 40 }, (_, i) => `k${i}=v${i}`).join(","),
    },
    {
      traceparent: `00-${TID}-${SID}-01`,
      tracestate: Array.from({ length: 12 }, (_, i) => `k${i}=${"x".repeat(50)}`).join(","),
    },
  ];
  test.each(cases.map((h) => [JSON.stringify(h), h]))("%s", (_name, headers) => {
    expect(traceParentOf(headers)).toEqual(reference(headers));
  });

  test("seeded random hostile headers: 20,000 of them, all equal", () => {
    const rnd = seededRandom(20261202);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    const hex = (n: number) =>
      Array.from({ length: n }, () => pick([..."0123456789abcdef", "A", "0", "0", "0"])).join("");
    const part = () =>
      pick([
        "00",
        "01",
        "ff",
        "0g",
        hex(2),
        hex(32),
        hex(16),
        "0".repeat(32),
        "0".repeat(16),
        hex(31),
        "",
        " ",
        "-",
        "x",
      ]);
    const members = () =>
      Array.from({ length: Math.floor(rnd() * 40) }, () =>
        pick([
          `${pick(["a", "k", "z9", "t@v", "0x@y", "A", "", "a b", "é", "a".repeat(260)])}=${pick(["1", "v", " v", "v ", "", "a=b", "a,b", "~", "\u00e9", "x".repeat(300)])}`,
          pick([" ", "", "==", ",", "\t", "noeq"]),
        ]),
      ).join(pick([",", ", ", " ,", ",,"]));
    for (let i = 0; i < 20000; i++) {
      const tp =
        rnd() < 0.5
          ? `${pick(["00", "01", "fe", "ff", "0"])}-${hex(32)}-${hex(16)}-${hex(2)}${pick(["", "", "-", "-x", " ", "\n"])}`
          : Array.from({ length: 1 + Math.floor(rnd() * 5) }, part).join("-");
      const headers: Headers = { traceparent: rnd() < 0.1 ? [tp, tp] : tp };
      if (rnd() < 0.7) headers.tracestate = rnd() < 0.2 ? [members(), members()] : members();
      const got = traceParentOf(headers);
      const want = reference(headers);
      if (JSON.stringify(got) !== JSON.stringify(want))
        throw new Error(
          `differs for ${JSON.stringify(headers)}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`,
        );
    }
  });

  test("normalizeTraceState equals TraceState(raw).serialize()", () => {
    const rnd = seededRandom(7);
    const chars = "ab=,@ 0x*/-_~\t";
    for (let i = 0; i < 20000; i++) {
      const raw = Array.from({ length: Math.floor(rnd() * 80) }, () =>
        chars.charAt(Math.floor(rnd() * chars.length)),
      ).join("");
      expect(normalizeTraceState(raw)).toBe(new TraceState(raw).serialize());
    }
  });
});
