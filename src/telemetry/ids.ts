import { randomFillSync } from "node:crypto";
import type { IdGenerator } from "@opentelemetry/sdk-trace";

/**
 * Span and trace ids. When audit runs in a worker thread the main thread
 * names a decision's span before the worker creates it (the ledger links
 * action spans to it and action reports return its ids), so ids are drawn on
 * the main thread and handed to the worker's tracer through ForcedIdGenerator.
 */

const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

function randomHex(bytes: number): string {
  for (;;) {
    if (offset + bytes > pool.length) {
      pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES));
      offset = 0;
    }
    const start = offset;
    offset += bytes;
    // all zeros is the W3C "invalid" id: draw again (probability 2^-64 or less)
    for (let i = start; i < offset; i++)
      if (pool[i] !== 0) return pool.toString("hex", start, offset);
  }
}

export const newTraceId = (): string => randomHex(16);
export const newSpanId = (): string => randomHex(8);

export interface SpanIds {
  traceId: string;
  spanId: string;
}

/**
 * An IdGenerator whose next ids can be set: `use(ids, fn)` makes the span
 * started inside `fn` take `ids` (its trace id only when it has no valid
 * parent, exactly as the SDK's own generator would be asked). Otherwise random.
 */
export class ForcedIdGenerator implements IdGenerator {
  private forced: SpanIds | undefined;

  generateTraceId(): string {
    return this.forced?.traceId ?? newTraceId();
  }

  generateSpanId(): string {
    return this.forced?.spanId ?? newSpanId();
  }

  use<T>(ids: SpanIds | undefined, fn: () => T): T {
    this.forced = ids;
    try {
      return fn();
    } finally {
      this.forced = undefined;
    }
  }
}
