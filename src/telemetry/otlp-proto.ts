/**
 * OTLP/HTTP protobuf encoding of ExportTraceServiceRequest, byte for byte
 * what @opentelemetry/otlp-transformer's ProtobufTraceSerializer writes
 * (test/unit/otlp-proto.test.ts holds the two side by side), but with native
 * string encoding and every length known before it is written: the
 * transformer encodes strings one char code at a time and shifts each
 * message that outgrows its one-byte length prefix, which made span export
 * the largest part of the audit work per decision.
 *
 * Two passes: sizes (each string measured once with Buffer.byteLength, the
 * results kept on a tape in write order), then one write into a Buffer of
 * exactly that size.
 */
import type { Attributes, Link } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace";

type HrTime = [number, number];
/** An attribute value (AnyValue in OTLP): string, boolean, number, bytes, array or map. */
type AnyValue = unknown;
const MIN_64_BIT_INT = -(2 ** 63);
const MAX_64_BIT_INT = 2 ** 63;

// -- sizes ------------------------------------------------------------------------

function varintSize(v: number): number {
  if (v < 0 || v > 0xffffffff) return v < 0 ? 10 : Math.ceil(Math.log2(v + 1) / 7);
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  return 5;
}

/** tag (one byte: every length-delimited field used here is below 16) + length varint + body. */
const delimited = (body: number): number => 1 + varintSize(body) + body;
const strSize = (s: string): number => delimited(Buffer.byteLength(s, "utf8"));

/**
 * Sizes and string byte lengths, recorded by the size pass in the order the
 * write pass needs them (a slot is reserved where a message's size must
 * precede its contents), so each string is measured once.
 */
class Tape {
  readonly v: number[] = [];
  r = 0;
  reserve(): number {
    return this.v.push(0) - 1;
  }
  push(n: number): number {
    this.v.push(n);
    return n;
  }
  next(): number {
    return this.v[this.r++] as number;
  }
}

function anyValueSize(v: AnyValue, t: Tape): number {
  switch (typeof v) {
    case "string":
      return delimited(t.push(Buffer.byteLength(v, "utf8")));
    case "boolean":
      return 2;
    case "number":
      return Number.isInteger(v) && v >= MIN_64_BIT_INT && v < MAX_64_BIT_INT
        ? 1 + varintSize(v)
        : 9;
    case "object":
      break;
    default:
      return 0;
  }
  if (v === null) return 0;
  if (v instanceof Uint8Array) return delimited(v.length);
  const slot = t.reserve();
  let n = 0;
  if (Array.isArray(v)) {
    for (const item of v as AnyValue[]) {
      const itemSlot = t.reserve();
      const size = anyValueSize(item, t);
      t.v[itemSlot] = size;
      n += delimited(size);
    }
  } else {
    const o = v as Record<string, unknown>;
    for (const k in o)
      if (Object.prototype.hasOwnProperty.call(o, k)) n += delimited(keyValueSize(k, o[k], t));
  }
  t.v[slot] = n;
  return delimited(n);
}

/** Tape: [KeyValue size, key bytes, AnyValue size, ...the value's own]. */
function keyValueSize(k: string, v: AnyValue, t: Tape): number {
  const slot = t.reserve();
  const keyBytes = t.push(Buffer.byteLength(k, "utf8"));
  const valueSlot = t.reserve();
  const value = anyValueSize(v, t);
  t.v[valueSlot] = value;
  const size = delimited(keyBytes) + delimited(value);
  t.v[slot] = size;
  return size;
}

function attributesSize(attrs: Attributes | undefined, t: Tape): number {
  let n = 0;
  if (attrs === undefined) return 0;
  for (const k in attrs)
    if (Object.prototype.hasOwnProperty.call(attrs, k))
      n += delimited(keyValueSize(k, attrs[k], t));
  return n;
}

/** OTLP span/link flags: the W3C trace flags, "has is-remote" and is-remote (of the parent or link). */
function flagsOf(traceFlags: number, isRemote: boolean | undefined): number {
  return ((traceFlags & 0xff) | 0x100 | (isRemote ? 0x200 : 0)) >>> 0;
}

/** Tape: [Link size, ...its attributes]. */
function linkSize(link: Link, t: Tape): number {
  const slot = t.reserve();
  const ts = link.context.traceState?.serialize();
  const size =
    18 + // trace id
    10 + // span id
    (ts ? strSize(ts) : 0) +
    attributesSize(link.attributes, t) +
    1 +
    varintSize(link.droppedAttributesCount ?? 0) +
    5; // flags (field 6: one-byte tag)
  t.v[slot] = size;
  return size;
}

function statusSize(s: ReadableSpan["status"]): number {
  return (s.message ? strSize(s.message) : 0) + 1 + varintSize(s.code);
}

/** Tape: [...attributes, per event: size, ...its attributes, per link: as linkSize]. */
function spanSize(span: ReadableSpan, t: Tape): number {
  const ctx = span.spanContext();
  const ts = ctx.traceState?.serialize();
  let n = 18 + 10;
  if (ts) n += strSize(ts);
  if (span.parentSpanContext?.spanId) n += 10;
  n += strSize(span.name);
  if (span.kind != null && span.kind + 1 !== 0) n += 1 + varintSize(span.kind + 1);
  n += 9 + 9;
  n += attributesSize(span.attributes, t);
  n += 1 + varintSize(span.droppedAttributesCount);
  for (const e of span.events) {
    const slot = t.reserve();
    const size =
      9 +
      strSize(e.name) +
      attributesSize(e.attributes, t) +
      1 +
      varintSize(e.droppedAttributesCount ?? 0);
    t.v[slot] = size;
    n += delimited(size);
  }
  n += 1 + varintSize(span.droppedEventsCount);
  for (const l of span.links) n += delimited(linkSize(l, t));
  n += 1 + varintSize(span.droppedLinksCount);
  n += delimited(statusSize(span.status));
  n += 6; // flags: field 16 has a two-byte tag
  return n;
}

// -- writing -------------------------------------------------------------------------

class Writer {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    private readonly t: Tape,
  ) {}

  varint(value: number): void {
    const b = this.buf;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 127) {
        b[this.pos++] = (v & 127) | 128;
        v >>>= 7;
      }
      b[this.pos++] = v;
      return;
    }
    let low: number;
    let high: number;
    const abs = Math.abs(value);
    low = abs >>> 0;
    high = (abs / 4294967296) >>> 0;
    if (value < 0) {
      low = ~low >>> 0;
      high = ~high >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 127) {
      b[this.pos++] = (low & 127) | 128;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    b[this.pos++] = low & 127;
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  string(field: number, s: string): void {
    this.tag(field, 2);
    this.varint(Buffer.byteLength(s, "utf8"));
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  bytes(field: number, bytes: Uint8Array): void {
    this.tag(field, 2);
    this.varint(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  hex(field: number, hex: string, byteLength: number): void {
    this.tag(field, 2);
    this.buf[this.pos++] = byteLength;
    this.pos += this.buf.write(hex, this.pos, byteLength, "hex");
  }

  fixed32(field: number, v: number): void {
    this.tag(field, 5);
    this.pos = this.buf.writeUInt32LE(v >>> 0, this.pos);
  }

  hrTime(field: number, t: HrTime): void {
    this.tag(field, 1);
    const nanos = BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]);
    this.pos = this.buf.writeBigUInt64LE(BigInt.asUintN(64, nanos), this.pos);
  }

  message(field: number, size: number): void {
    this.tag(field, 2);
    this.varint(size);
  }

  /** A string whose byte length is the tape's next entry. */
  taped(field: number, s: string): void {
    this.tag(field, 2);
    this.varint(this.t.next());
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  anyValue(v: AnyValue): void {
    switch (typeof v) {
      case "string":
        this.taped(1, v);
        return;
      case "boolean":
        this.tag(2, 0);
        this.buf[this.pos++] = v ? 1 : 0;
        return;
      case "number":
        if (Number.isInteger(v) && v >= MIN_64_BIT_INT && v < MAX_64_BIT_INT) {
          this.tag(3, 0);
          this.varint(v);
        } else {
          this.tag(4, 1);
          this.pos = this.buf.writeDoubleLE(v, this.pos);
        }
        return;
      case "object":
        break;
      default:
        return;
    }
    if (v === null) return;
    if (v instanceof Uint8Array) {
      this.bytes(7, v);
      return;
    }
    if (Array.isArray(v)) {
      this.message(5, this.t.next());
      for (const item of v as AnyValue[]) {
        this.message(1, this.t.next());
        this.anyValue(item);
      }
      return;
    }
    const o = v as Record<string, unknown>;
    this.message(6, this.t.next());
    for (const k in o) if (Object.prototype.hasOwnProperty.call(o, k)) this.keyValue(1, k, o[k]);
  }

  keyValue(field: number, k: string, v: AnyValue): void {
    this.message(field, this.t.next());
    this.taped(1, k);
    this.message(2, this.t.next());
    this.anyValue(v);
  }

  attributes(field: number, attrs: Attributes | undefined): void {
    if (attrs === undefined) return;
    for (const k in attrs)
      if (Object.prototype.hasOwnProperty.call(attrs, k)) this.keyValue(field, k, attrs[k]);
  }

  span(span: ReadableSpan, size: number): void {
    this.message(2, size);
    const ctx = span.spanContext();
    this.hex(1, ctx.traceId, 16);
    this.hex(2, ctx.spanId, 8);
    const ts = ctx.traceState?.serialize();
    if (ts) this.string(3, ts);
    if (span.parentSpanContext?.spanId) this.hex(4, span.parentSpanContext.spanId, 8);
    this.string(5, span.name);
    const kind = span.kind == null ? 0 : span.kind + 1;
    if (kind !== 0) {
      this.tag(6, 0);
      this.varint(kind);
    }
    this.hrTime(7, span.startTime);
    this.hrTime(8, span.endTime);
    this.attributes(9, span.attributes);
    this.tag(10, 0);
    this.varint(span.droppedAttributesCount);
    for (const e of span.events) {
      this.message(11, this.t.next());
      this.hrTime(1, e.time);
      this.string(2, e.name);
      this.attributes(3, e.attributes);
      this.tag(4, 0);
      this.varint(e.droppedAttributesCount ?? 0);
    }
    this.tag(12, 0);
    this.varint(span.droppedEventsCount);
    for (const l of span.links) {
      this.message(13, this.t.next());
      this.hex(1, l.context.traceId, 16);
      this.hex(2, l.context.spanId, 8);
      const lts = l.context.traceState?.serialize();
      if (lts) this.string(3, lts);
      this.attributes(4, l.attributes);
      this.tag(5, 0);
      this.varint(l.droppedAttributesCount ?? 0);
      this.fixed32(6, flagsOf(l.context.traceFlags, l.context.isRemote));
    }
    this.tag(14, 0);
    this.varint(span.droppedLinksCount);
    this.message(15, statusSize(span.status));
    if (span.status.message) this.string(2, span.status.message);
    this.tag(3, 0);
    this.varint(span.status.code);
    this.fixed32(16, flagsOf(ctx.traceFlags, span.parentSpanContext?.isRemote));
  }
}

type Scope = ReadableSpan["instrumentationScope"];
type Resource = ReadableSpan["resource"];

function scopeSize(scope: Scope, t: Tape): number {
  let n = strSize(scope.name);
  if (scope.version) n += strSize(scope.version);
  const s = scope as Scope & { attributes?: Attributes; droppedAttributesCount?: number };
  n += attributesSize(s.attributes, t);
  if (s.droppedAttributesCount) n += 1 + varintSize(s.droppedAttributesCount);
  return n;
}

interface ScopePlan {
  scope: Scope;
  scopeBody: number;
  size: number;
  spans: Array<{ span: ReadableSpan; size: number }>;
}

/** ExportTraceServiceRequest for `spans`, grouped by resource, then scope (by identity, in order of first use). */
export function encodeTraceRequest(spans: ReadableSpan[]): Uint8Array {
  const byResource = new Map<Resource, Map<Scope, ReadableSpan[]>>();
  for (const span of spans) {
    let scopes = byResource.get(span.resource);
    if (scopes === undefined)
      byResource.set(span.resource, (scopes = new Map<Scope, ReadableSpan[]>()));
    let list = scopes.get(span.instrumentationScope);
    if (list === undefined) scopes.set(span.instrumentationScope, (list = []));
    list.push(span);
  }
  // sizes, in the order of writing (the tape is read back in this order)
  const t = new Tape();
  const plan: Array<{
    resource: Resource;
    resourceBody: number;
    size: number;
    scopes: ScopePlan[];
  }> = [];
  let total = 0;
  for (const [resource, scopes] of byResource) {
    const resourceBody = attributesSize(resource.attributes, t) + 2;
    let size = delimited(resourceBody);
    const scopePlans: ScopePlan[] = [];
    for (const [scope, list] of scopes) {
      const scopeBody = scopeSize(scope, t);
      let ss = delimited(scopeBody);
      const sized = list.map((span) => ({ span, size: spanSize(span, t) }));
      for (const x of sized) ss += delimited(x.size);
      if (scope.schemaUrl) ss += strSize(scope.schemaUrl);
      scopePlans.push({ scope, scopeBody, size: ss, spans: sized });
      size += delimited(ss);
    }
    if (resource.schemaUrl) size += strSize(resource.schemaUrl);
    plan.push({ resource, resourceBody, size, scopes: scopePlans });
    total += delimited(size);
  }
  const w = new Writer(Buffer.allocUnsafe(total), t);
  for (const r of plan) {
    w.message(1, r.size);
    w.message(1, r.resourceBody);
    w.attributes(1, r.resource.attributes);
    w.tag(2, 0);
    w.varint(0);
    for (const sc of r.scopes) {
      w.message(2, sc.size);
      w.message(1, sc.scopeBody);
      w.string(1, sc.scope.name);
      if (sc.scope.version) w.string(2, sc.scope.version);
      const s = sc.scope as Scope & { attributes?: Attributes; droppedAttributesCount?: number };
      w.attributes(3, s.attributes);
      if (s.droppedAttributesCount) {
        w.tag(4, 0);
        w.varint(s.droppedAttributesCount);
      }
      for (const { span, size } of sc.spans) w.span(span, size);
      if (sc.scope.schemaUrl) w.string(3, sc.scope.schemaUrl);
    }
    if (r.resource.schemaUrl) w.string(3, r.resource.schemaUrl);
  }
  if (w.pos !== total || t.r !== t.v.length)
    throw new Error(`OTLP encoding: wrote ${w.pos} bytes of a planned ${total}`);
  return w.buf;
}
