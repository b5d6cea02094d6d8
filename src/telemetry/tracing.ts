import {
  context as otelContext,
  ROOT_CONTEXT,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type SpanKind,
  type SpanOptions,
  type SpanStatus,
  type Tracer,
} from "@opentelemetry/api";
import {
  ExportResultCode,
  hrTimeDuration,
  millisToHrTime,
  W3CTraceContextPropagator,
} from "@opentelemetry/core";
import type { Resource } from "@opentelemetry/resources";
import type * as HttpJsonExporterModuleNs from "@opentelemetry/exporter-trace-otlp-http";
import type * as GrpcExporterModuleNs from "@opentelemetry/exporter-trace-otlp-grpc";
import type * as ExporterBaseModuleNs from "@opentelemetry/otlp-exporter-base";
import type * as NodeHttpModuleNs from "@opentelemetry/otlp-exporter-base/node-http";
import type * as TransformerModuleNs from "@opentelemetry/otlp-transformer";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  RandomIdGenerator,
  SamplingDecision,
  TracerProvider,
  type IdGenerator,
  type ReadableSpan,
  type Sampler,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace";
import { toolgateError } from "../errors";
import type { Logger } from "../shared/log";
import { redactUrl } from "../shared/url";
import type * as ResourceModuleNs from "./resource";
import type * as OtlpHttpTransportModuleNs from "./otlp-http-transport";

type Env = Record<string, string | undefined>;

/** The gRPC exporter's module, loaded on use (@grpc/grpc-js: ~7.5 MB resident per thread). */
type GrpcExporterModule = typeof GrpcExporterModuleNs;
// Loaded on use too, when a Tracing or an exporter is built: the OTLP/HTTP exporters, the
// transformer (with the sdk-metrics it pulls in) and the resource detectors. The main thread
// only needs this module's trace-context helpers while the audit worker exports (#20).
type HttpJsonExporterModule = typeof HttpJsonExporterModuleNs;
type ExporterBaseModule = typeof ExporterBaseModuleNs;
type NodeHttpModule = typeof NodeHttpModuleNs;
type TransformerModule = typeof TransformerModuleNs;
type ResourceModule = typeof ResourceModuleNs;
type OtlpHttpTransportModule = typeof OtlpHttpTransportModuleNs;
export interface TracingOptions {
  env: Env;
  log: Logger;
  serviceVersion: string;
  /** Overrides the OTLP exporter (tests pass an InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Bound on spans waiting for export; beyond it spans are dropped and counted. */
  maxQueueSize?: number;
  /** How often queued spans are exported, in ms. */
  scheduledDelayMs?: number;
  maxExportBatchSize?: number;
  /** How long one export may take before its spans are counted as dropped, in ms. */
  exportTimeoutMs?: number;
  /** Exports in flight at once (default 2). */
  maxConcurrentExports?: number;
  /** Span and trace ids (the audit worker's ForcedIdGenerator); default random. */
  idGenerator?: IdGenerator;
}

export interface TracingStats {
  enabled: boolean;
  queued: number;
  exported: number;
  dropped: number;
  exportFailures: number;
  endpoint: string | null;
}

/** The OTel spec's OTEL_TRACES_SAMPLER values. */
export function samplerFromEnv(env: Env): Sampler {
  const name = (env.OTEL_TRACES_SAMPLER ?? "parentbased_always_on").trim().toLowerCase();
  const argRaw = env.OTEL_TRACES_SAMPLER_ARG;
  const ratio = (): number => {
    const r = argRaw === undefined || argRaw.trim() === "" ? 1 : Number(argRaw);
    if (!Number.isFinite(r) || r < 0 || r > 1) {
      throw toolgateError(
        "config_invalid",
        `OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, got "${argRaw}"`,
      );
    }
    return r;
  };
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio());
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
    default:
      throw toolgateError(
        "config_invalid",
        `OTEL_TRACES_SAMPLER "${name}" is not supported. Fix: use always_on, always_off, traceidratio or parentbased_*`,
      );
  }
}

export interface BatchSettings {
  maxQueueSize: number;
  scheduledDelayMs: number;
  maxExportBatchSize: number;
  exportTimeoutMs: number;
  /** Exports in flight at once, each of up to maxExportBatchSize spans. */
  maxConcurrentExports: number;
}

const BSP_VARS: Array<[keyof BatchSettings, string, number]> = [
  ["scheduledDelayMs", "OTEL_BSP_SCHEDULE_DELAY", 0],
  ["exportTimeoutMs", "OTEL_BSP_EXPORT_TIMEOUT", 1],
  ["maxQueueSize", "OTEL_BSP_MAX_QUEUE_SIZE", 1],
  ["maxExportBatchSize", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1],
];

/**
 * The batch span processor's settings: the spec's OTEL_BSP_* variables when
 * set, else `given` (toolgate's tracing.max_queue_size and
 * tracing.scheduled_delay_ms, or the defaults). A value that is not an integer
 * (≥ 0 for the delay, ≥ 1 otherwise) is ignored with a warning, as the spec
 * says; a batch larger than the queue is cut to the queue's size.
 */
export function batchSettingsFromEnv(env: Env, log: Logger, given: BatchSettings): BatchSettings {
  const out = { ...given };
  for (const [key, name, min] of BSP_VARS) {
    const raw = env[name]?.trim();
    if (raw === undefined || raw === "") continue;
    const n = Number(raw);
    if (/^\d+$/.test(raw) && Number.isSafeInteger(n) && n >= min) out[key] = n;
    else
      log.warn(`${name} ignored`, {
        event: "telemetry.bsp_invalid",
        value: raw,
        using: given[key],
        fix: `set ${name} to an integer ≥ ${min}`,
      });
  }
  if (out.maxExportBatchSize > out.maxQueueSize) out.maxExportBatchSize = out.maxQueueSize;
  return out;
}

/**
 * OTLP/HTTP protobuf, as @opentelemetry/exporter-trace-otlp-proto builds it:
 * OTel's configuration (env headers, timeout, compression) and its
 * serializer, the transformer's ProtobufTraceSerializer (a hand-written
 * encoder lost the A/B of issue #18; docs/audit.md, "OTLP protocols"), through
 * OTel's public network delegate over toolgate's node:http / node:https
 * transport with OTel's retry policy (./otlp-http-transport: the timeout bounds
 * the whole request, response bodies are capped, and unlike OTel's transport
 * it does not load undici for http://, ~3 MB per exporting thread, #20).
 * For `https://`, the TLS settings OTel reads
 * (OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE / _CLIENT_KEY / _CLIENT_CERTIFICATE,
 * tlsFromEnv) are read here, at start-up: a file that cannot be read is
 * config_invalid. Any other scheme is config_invalid too.
 */
function otlpHttpProtoExporter(url: string): SpanExporter {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { OTLPExporterBase, createOtlpNetworkExportDelegate } =
    require("@opentelemetry/otlp-exporter-base") as ExporterBaseModule;
  const { convertLegacyHttpOptions, createOtlpHttpExporterMetrics } =
    require("@opentelemetry/otlp-exporter-base/node-http") as NodeHttpModule;
  const { ProtobufTraceSerializer, TraceExporterMetricsHelper } =
    require("@opentelemetry/otlp-transformer") as TransformerModule;
  const { createNodeHttpTransport, retryingTransport, tlsFromEnv } =
    require("./otlp-http-transport") as OtlpHttpTransportModule;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const options = convertLegacyHttpOptions({ url }, "TRACES", "v1/traces", {
    "Content-Type": "application/x-protobuf",
  });
  let protocol: string;
  try {
    protocol = new URL(options.url).protocol;
  } catch {
    protocol = "";
  }
  if (protocol !== "http:" && protocol !== "https:")
    throw toolgateError(
      "config_invalid",
      `the OTLP endpoint "${redactUrl(options.url)}" (OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT) is not an http:// or https:// URL. Fix: set it to http://host:4318 or https://host:4318`,
    );
  const componentType = "otlp_http_span_exporter";
  const delegate = createOtlpNetworkExportDelegate(
    options,
    ProtobufTraceSerializer,
    createOtlpHttpExporterMetrics(
      componentType,
      TraceExporterMetricsHelper,
      options.url,
      undefined,
    ),
    retryingTransport(
      createNodeHttpTransport({
        url: options.url,
        headers: options.headers,
        compression: options.compression,
        userAgent: options.userAgent,
        ...(protocol === "https:" ? { tls: tlsFromEnv("TRACES") } : {}),
      }),
    ),
  );
  class OTLPHttpProtoExporter extends OTLPExporterBase<ReadableSpan[]> implements SpanExporter {}
  return new OTLPHttpProtoExporter(delegate);
}

/**
 * An exporter's error about `endpoint`, fit for a message: the endpoint as
 * redactUrl shows it, and no user info or query string of any URL left in it.
 */
function redactedReason(e: unknown, endpoint: string): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg
    .split(endpoint)
    .join(redactUrl(endpoint))
    .replace(/(\/\/)[^/@\s"']*@/g, "$1")
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s"'?]*)\?[^\s"']*/gi, "$1?…");
}

/** The first of the variables set to something other than blanks, trimmed. */
function firstSet(...values: Array<string | undefined>): string | undefined {
  for (const v of values) if (v !== undefined && v.trim() !== "") return v.trim();
  return undefined;
}

/** The OTLP protocols toolgate exports spans with (OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL). */
export type OtlpProtocol = "http/protobuf" | "http/json" | "grpc";

/**
 * Picks the OTLP exporter for OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL and its
 * endpoint from `env`:
 * - `http/protobuf` (default) and `http/json`: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
 *   as is, else OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`, else
 *   `http://localhost:4318/v1/traces`;
 * - `grpc` (@opentelemetry/exporter-trace-otlp-grpc):
 *   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT, both
 *   as they are (gRPC has no path), else `http://localhost:4317`; `http://` is
 *   plaintext, `https://` TLS, a bare `host:port` TLS unless
 *   OTEL_EXPORTER_OTLP_(TRACES_)INSECURE=true.
 * Headers, timeout, compression and certificates
 * (OTEL_EXPORTER_OTLP_(TRACES_)HEADERS / _TIMEOUT / _COMPRESSION /
 * _CERTIFICATE / _CLIENT_KEY / _CLIENT_CERTIFICATE, and _INSECURE for gRPC)
 * are read by the exporter itself from the process environment, as the SDK
 * does (the audit worker's is a copy of the main thread's).
 */
export function exporterFromEnv(env: Env): {
  exporter: SpanExporter;
  endpoint: string;
  protocol: OtlpProtocol;
} {
  const protocol =
    firstSet(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, env.OTEL_EXPORTER_OTLP_PROTOCOL) ??
    "http/protobuf";
  if (protocol === "grpc") {
    const endpoint =
      firstSet(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, env.OTEL_EXPORTER_OTLP_ENDPOINT) ??
      "http://localhost:4317";
    try {
      // loaded on use: @grpc/grpc-js and the gRPC exporter (~7.5 MB resident per thread) only for protocol grpc
      const { OTLPTraceExporter: OTLPGrpcExporter } =
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        require("@opentelemetry/exporter-trace-otlp-grpc") as GrpcExporterModule;
      return { exporter: new OTLPGrpcExporter({ url: endpoint }), endpoint, protocol };
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT "${redactUrl(endpoint)}" is not a usable gRPC endpoint (${redactedReason(e, endpoint)}). Fix: set it to http://host:4317 (plaintext) or https://host:4317 (TLS)`,
      );
    }
  }
  const endpoint =
    firstSet(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) ??
    `${(firstSet(env.OTEL_EXPORTER_OTLP_ENDPOINT) ?? "http://localhost:4318").replace(/\/+$/, "")}/v1/traces`;
  if (protocol === "http/json") {
    const { OTLPTraceExporter: OTLPHttpJsonExporter } =
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      require("@opentelemetry/exporter-trace-otlp-http") as HttpJsonExporterModule;
    return { exporter: new OTLPHttpJsonExporter({ url: endpoint }), endpoint, protocol };
  }
  if (protocol === "http/protobuf")
    return { exporter: otlpHttpProtoExporter(endpoint), endpoint, protocol };
  throw toolgateError(
    "config_invalid",
    `OTEL_EXPORTER_OTLP_PROTOCOL "${protocol}" is not supported. Fix: use http/protobuf (default), http/json or grpc`,
  );
}

/**
 * A batching span processor with a hard bound: when the queue is full a span is
 * dropped and counted, never blocking a decision. A full batch
 * (maxExportBatchSize) leaves as soon as it is queued; less than a batch
 * leaves on the schedule delay's timer, armed when a span waits and none is
 * armed (or on flush). At most maxConcurrentExports exports run at a time;
 * what the timer could not send then leaves as soon as one ends. A failed or
 * timed-out export counts its spans as dropped.
 */
export class BoundedBatchProcessor implements SpanProcessor {
  private queue: ReadableSpan[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  /** The timer fired while no export could start: what waits leaves when one ends. */
  private due = false;
  private closed = false;
  exported = 0;
  dropped = 0;
  exportFailures = 0;

  constructor(
    private readonly exporter: SpanExporter,
    private readonly opts: BatchSettings,
    private readonly onDrop: (count: number, why: string) => void,
  ) {
    if (!Number.isSafeInteger(opts.maxConcurrentExports) || opts.maxConcurrentExports < 1)
      throw toolgateError(
        "config_invalid",
        `maxConcurrentExports must be an integer ≥ 1, got ${opts.maxConcurrentExports}`,
      );
  }

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (this.closed || (span.spanContext().traceFlags & 1) === 0) return;
    if (this.queue.length >= this.opts.maxQueueSize) {
      this.dropped++;
      this.onDrop(1, "queue_full");
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.opts.maxExportBatchSize) this.exportSome(false);
    else if (this.timer === undefined) this.arm();
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Exports in flight now. */
  get exporting(): number {
    return this.inFlight.size;
  }

  /** The schedule delay's timer, unless it runs already or nothing waits. */
  private arm(): void {
    if (this.timer !== undefined || this.queue.length === 0 || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.due = true;
      this.exportSome(true);
    }, this.opts.scheduledDelayMs);
    this.timer.unref();
  }

  /**
   * Starts exports while one may start: full batches, or with `all` whatever
   * waits; spans left behind wait for the timer or for an export to end.
   */
  private exportSome(all: boolean): void {
    while (
      this.inFlight.size < this.opts.maxConcurrentExports &&
      (this.queue.length >= this.opts.maxExportBatchSize || (all && this.queue.length > 0))
    ) {
      const batch = this.queue.splice(0, this.opts.maxExportBatchSize);
      // resource attributes read asynchronously (host.id) are awaited before the export
      const resource = batch[0]?.resource;
      const ready = resource?.asyncAttributesPending
        ? (resource.waitForAsyncAttributes?.() ?? Promise.resolve())
        : Promise.resolve();
      const exporting: Promise<void> = ready
        .then(
          () => this.exportBatch(batch),
          () => this.exportBatch(batch),
        )
        .then(() => {
          this.inFlight.delete(exporting);
          if (this.closed) return;
          if (this.due || this.queue.length >= this.opts.maxExportBatchSize)
            this.exportSome(this.due);
          else this.arm();
        });
      this.inFlight.add(exporting);
    }
    if (this.queue.length === 0) this.due = false;
    this.arm();
  }

  /** One export; it fails (spans dropped) on an error or after exportTimeoutMs, whichever first. */
  private exportBatch(batch: ReadableSpan[]): Promise<void> {
    return new Promise<void>((resolve) => {
      let done = false;
      const fail = (why: string): void => {
        this.exportFailures++;
        this.dropped += batch.length;
        this.onDrop(batch.length, why);
      };
      const finish = (outcome: () => void): void => {
        if (done) return; // a late answer after the timeout changes nothing
        done = true;
        clearTimeout(timer);
        outcome();
        resolve();
      };
      const timer = setTimeout(
        () => finish(() => fail("export_timeout")),
        this.opts.exportTimeoutMs,
      );
      timer.unref();
      try {
        this.exporter.export(batch, (result) =>
          finish(() => {
            if (result.code === ExportResultCode.SUCCESS) this.exported += batch.length;
            else fail(`export_failed: ${result.error?.message ?? "unknown"}`);
          }),
        );
      } catch (e) {
        finish(() => fail(`export_failed: ${(e as Error).message}`));
      }
    });
  }

  /** Exports everything queued, up to maxConcurrentExports at a time; resolves when all ended. */
  async forceFlush(): Promise<void> {
    for (;;) {
      this.exportSome(true);
      if (this.inFlight.size === 0) return;
      await Promise.race(this.inFlight);
    }
  }

  /** Flushes what it can within `timeoutMs` (a stuck collector must not hold up exit), then stops. */
  async shutdown(timeoutMs = 5000): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const outcome = await Promise.race([
      this.forceFlush().then(() => "flushed" as const),
      deadline,
    ]);
    clearTimeout(timer);
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (outcome === "timeout" && this.queue.length > 0) {
      this.dropped += this.queue.length;
      this.onDrop(this.queue.length, "shutdown_timeout");
      this.queue = [];
    }
    await Promise.race([this.exporter.shutdown(), new Promise((r) => setTimeout(r, 1000).unref())]);
  }
}

/** A span made by Tracing.prepareSpan: its context now, its end later. */
export interface PreparedSpan {
  readonly spanContext: SpanContext;
  finish(more?: Attributes, status?: SpanStatus, endTimeMs?: number): void;
}

const INVALID: SpanContext = {
  traceId: "00000000000000000000000000000000",
  spanId: "0000000000000000",
  traceFlags: 0,
};

function noopPrepared(sc: SpanContext): PreparedSpan {
  return { spanContext: sc, finish: () => undefined };
}

const propagator = new W3CTraceContextPropagator();
const headerGetter = {
  get: (carrier: Record<string, string | string[] | undefined>, key: string) => carrier[key],
  keys: (carrier: Record<string, string | string[] | undefined>) => Object.keys(carrier),
};

/** The parent context a W3C traceparent header names, or the root. */
export function extractTraceContext(
  headers: Record<string, string | string[] | undefined>,
): Context {
  if (headers.traceparent === undefined) return ROOT_CONTEXT;
  return propagator.extract(ROOT_CONTEXT, headers, headerGetter);
}

/**
 * toolgate's tracing: its own TracerProvider (no process-global registration,
 * so several sidecars can share a process in tests), configured by the standard
 * OTEL_* variables: OTEL_SDK_DISABLED, OTEL_SERVICE_NAME,
 * OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
 * OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT / _PROTOCOL (http/protobuf, http/json,
 * grpc) / _HEADERS / _TIMEOUT / _COMPRESSION / _CERTIFICATE (see exporterFromEnv).
 * Whatever the protocol, spans go through toolgate's BoundedBatchProcessor.
 */
export class Tracing {
  readonly enabled: boolean;
  readonly tracer: Tracer;
  private readonly provider: TracerProvider | undefined;
  private readonly processor: BoundedBatchProcessor | undefined;
  private readonly endpoint: string | null;
  private readonly sampler: Sampler | undefined;
  private readonly idGenerator: IdGenerator = new RandomIdGenerator();
  private readonly resource: Resource | undefined;
  private readonly scope: { name: string; version: string };

  constructor(opts: TracingOptions) {
    const disabled = (opts.env.OTEL_SDK_DISABLED ?? "").trim().toLowerCase() === "true";
    this.enabled = !disabled;
    this.scope = { name: "toolgate", version: opts.serviceVersion };
    if (opts.idGenerator) this.idGenerator = opts.idGenerator;
    if (disabled) {
      this.tracer = trace.getTracer("toolgate-disabled"); // the API's no-op tracer: no provider registered
      this.endpoint = null;
      return;
    }
    const { exporter, endpoint } = opts.exporter
      ? { exporter: opts.exporter, endpoint: "(in-process exporter)" }
      : exporterFromEnv(opts.env);
    this.endpoint = endpoint;
    let lastReport = 0;
    let unreported = 0;
    this.processor = new BoundedBatchProcessor(
      exporter,
      batchSettingsFromEnv(opts.env, opts.log, {
        maxQueueSize: opts.maxQueueSize ?? 8192,
        scheduledDelayMs: opts.scheduledDelayMs ?? 500,
        maxExportBatchSize: opts.maxExportBatchSize ?? 512,
        exportTimeoutMs: opts.exportTimeoutMs ?? 30_000,
        maxConcurrentExports: opts.maxConcurrentExports ?? 2,
      }),
      (count, why) => {
        // Counted always; logged at most every 10 s so a dead collector cannot flood the log.
        unreported += count;
        const now = Date.now();
        if (now - lastReport >= 10_000) {
          opts.log.warn("spans dropped", {
            event: "audit.spans_dropped",
            count: unreported,
            total_dropped: this.processor?.dropped,
            reason: why,
            endpoint,
          });
          lastReport = now;
          unreported = 0;
        }
      },
    );
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { buildResource } = require("./resource") as ResourceModule;
    const resource = buildResource(opts.env, opts.log, opts.serviceVersion);
    this.resource = resource;
    this.sampler = samplerFromEnv(opts.env);
    this.provider = new TracerProvider({
      resource,
      sampler: this.sampler,
      spanProcessors: [this.processor],
      idGenerator: this.idGenerator,
    });
    this.tracer = this.provider.getTracer("toolgate", opts.serviceVersion);
  }

  /** The parent context a W3C traceparent header names, or the root. */
  extract(headers: Record<string, string | string[] | undefined>): Context {
    return extractTraceContext(headers);
  }

  startSpan(name: string, options: SpanOptions, parent: Context): Span {
    return this.tracer.startSpan(name, options, parent);
  }

  /**
   * A span for attributes toolgate built itself (strings, numbers, booleans,
   * arrays of strings; well under the SDK's count limit): ids and sampling as
   * the SDK's tracer does them, but the finished span goes straight to the
   * export queue, without the SDK's per-attribute sanitising and its Span
   * object (about a fifth of the audit work per decision). Its context is
   * known at once; `finish` adds the last attributes and ends it.
   */
  prepareSpan(
    name: string,
    kind: SpanKind,
    parent: Context,
    attributes: Attributes,
    startTimeMs?: number,
    links: Link[] = [],
  ): PreparedSpan {
    const parentSc = trace.getSpanContext(parent);
    const validParent =
      parentSc !== undefined && trace.isSpanContextValid(parentSc) ? parentSc : undefined;
    if (this.sampler === undefined || this.processor === undefined) {
      // disabled: the API's no-op tracer hands back the parent's context, or the invalid one
      return noopPrepared(validParent ?? INVALID);
    }
    const spanId = this.idGenerator.generateSpanId();
    const traceId = validParent?.traceId ?? this.idGenerator.generateTraceId();
    const sampling = this.sampler.shouldSample(parent, traceId, name, kind, attributes, links);
    const sc: SpanContext = {
      traceId,
      spanId,
      traceFlags: sampling.decision === SamplingDecision.RECORD_AND_SAMPLED ? 1 : 0,
    };
    const traceState = sampling.traceState ?? validParent?.traceState;
    if (traceState !== undefined) sc.traceState = traceState;
    if (sampling.decision === SamplingDecision.NOT_RECORD) return noopPrepared(sc);
    if (sampling.attributes) Object.assign(attributes, sampling.attributes);
    const start = startTimeMs ?? performance.timeOrigin + performance.now();
    const processor = this.processor;
    const resource = this.resource as Resource;
    const scope = this.scope;
    return {
      spanContext: sc,
      finish(more?: Attributes, status?: SpanStatus, endTimeMs?: number): void {
        if (more) Object.assign(attributes, more);
        const startTime = millisToHrTime(start);
        const endTime = millisToHrTime(
          Math.max(start, endTimeMs ?? performance.timeOrigin + performance.now()),
        );
        const span: ReadableSpan = {
          name,
          kind,
          spanContext: () => sc,
          ...(validParent ? { parentSpanContext: validParent } : {}),
          startTime,
          endTime,
          status: status ?? { code: SpanStatusCode.UNSET },
          attributes,
          links,
          events: [],
          duration: hrTimeDuration(startTime, endTime),
          ended: true,
          resource,
          instrumentationScope: scope,
          droppedAttributesCount: 0,
          droppedEventsCount: 0,
          droppedLinksCount: 0,
        };
        processor.onEnd(span);
      },
    };
  }

  /** A context whose active span is `span` (to parent children or link). */
  contextWith(span: Span, parent: Context = otelContext.active()): Context {
    return trace.setSpan(parent, span);
  }

  stats(): TracingStats {
    return {
      enabled: this.enabled,
      queued: this.processor?.queued ?? 0,
      exported: this.processor?.exported ?? 0,
      dropped: this.processor?.dropped ?? 0,
      exportFailures: this.processor?.exportFailures ?? 0,
      endpoint: this.endpoint,
    };
  }

  async flush(): Promise<void> {
    await this.processor?.forceFlush();
  }

  async shutdown(): Promise<void> {
    await this.provider?.shutdown();
  }
}
