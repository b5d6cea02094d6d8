/**
 * OTLP/HTTP to a plain `http://` collector, as the transport of OTel's public
 * `createOtlpNetworkExportDelegate` (tracing.ts builds the exporter).
 *
 * Why not OTel's own node transport: it gets node:http with `await
 * import("http")` on its first export (its agent factory too). An ESM import
 * of a builtin reads every export of it, and node:http's lazy WebSocket /
 * CloseEvent / MessageEvent exports load undici, node's fetch: ~3 MB of idle
 * RSS in each thread that exports (#20). `require("node:http")`, as this file
 * compiles to, reads only what it names.
 *
 * Kept as OTel's transport (otlp-exporter-base 0.301: http-transport-utils,
 * retrying-transport, is-export-retryable) does it: the URL, the headers its
 * configuration merges (OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, then the required
 * Content-Type) plus its User-Agent, gzip (OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION),
 * a keep-alive agent, the classification (2xx success; 429/502/503/504 and
 * connection errors retryable, Retry-After honoured; anything else a failure
 * carrying an OTLPExporterError with the status) and the retry policy (up to 5
 * retries, backoff 1 s × 1.5 per retry up to 5 s, ±20 % jitter, all within
 * the export's timeout). Where it differs, on purpose:
 * - the timeout bounds the whole request (OTel's is the socket's idle time,
 *   so a collector that trickles its answer could hold an export forever);
 *   a retry gets what is left of the deadline when it starts;
 * - a response body is read up to 64 KiB (OTel: 4 MB; an OTLP response is an
 *   ExportTraceServiceResponse, a few bytes); past that, or a Content-Length
 *   past that, the connection is dropped and the export fails, as OTel does
 *   past its limit;
 * - a Retry-After that is neither seconds nor a date means the usual backoff
 *   (OTel retries at once);
 * - the body is gzipped in one piece and sent with a Content-Length (OTel
 *   streams it chunked);
 * - shutdown closes the agent's idle sockets.
 */
import { diag } from "@opentelemetry/api";
import {
  OTLPExporterError,
  type ExportResponse,
  type ExportResponseRetryable,
  type IExporterTransport,
} from "@opentelemetry/otlp-exporter-base";
import { readFileSync } from "node:fs";
import { Agent, request, type ClientRequest, type IncomingMessage } from "node:http";
import { dirname, join } from "node:path";
import { gzip } from "node:zlib";

/** The most of a response body read (an OTLP response is a few bytes). */
export const MAX_RESPONSE_BYTES = 64 * 1024;

/** OTel's retry policy (retrying-transport). */
export const RETRY_POLICY = {
  maxRetries: 5,
  initialBackoffMs: 1000,
  maxBackoffMs: 5000,
  multiplier: 1.5,
  jitter: 0.2,
} as const;

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);
const RETRYABLE_NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENOTFOUND",
  "ENETUNREACH",
  "EHOSTUNREACH",
]);

export interface NodeHttpTransportOptions {
  /** An `http://` URL. */
  url: string;
  /** The merged headers, as OTel's configuration hands them (a fresh object each call). */
  headers: () => Promise<Record<string, string>>;
  compression: "gzip" | "none";
  /** Put before OTel's User-Agent, as its `userAgent` option is. */
  userAgent?: string | undefined;
  /** Default MAX_RESPONSE_BYTES. */
  maxResponseBytes?: number;
}

let defaultUserAgent: string | undefined;

/**
 * What OTel's node transport sends as User-Agent:
 * `OTel-OTLP-Exporter-JavaScript/<otlp-exporter-base's version>`. The version
 * is read from the package's package.json (its exports map hides the file
 * from require).
 */
export function otelUserAgent(): string {
  if (defaultUserAgent !== undefined) return defaultUserAgent;
  let version = "unknown";
  try {
    let dir = dirname(require.resolve("@opentelemetry/otlp-exporter-base"));
    for (let i = 0; i < 4; i++, dir = dirname(dir)) {
      let pkg: { name?: unknown; version?: unknown };
      try {
        pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as typeof pkg;
      } catch {
        continue;
      }
      if (pkg.name === "@opentelemetry/otlp-exporter-base" && typeof pkg.version === "string") {
        version = pkg.version;
        break;
      }
    }
  } catch {
    // the header keeps "unknown": nothing else depends on it
  }
  defaultUserAgent = `OTel-OTLP-Exporter-JavaScript/${version}`;
  return defaultUserAgent;
}

/**
 * Retry-After as OTel reads it: seconds (≤ 0: at once), or an HTTP date
 * (past: at once); undefined when absent or neither (then the backoff applies).
 */
export function retryAfterMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number.parseInt(value, 10);
  if (Number.isInteger(seconds)) return seconds > 0 ? seconds * 1000 : 0;
  const at = new Date(value).getTime();
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - Date.now());
}

function gzipped(data: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    gzip(data, (error, out) => (error ? reject(error) : resolve(out))),
  );
}

/** One POST per send, no retries (wrap it in retryingTransport). */
class NodeHttpTransport implements IExporterTransport {
  private readonly agent = new Agent({ keepAlive: true });
  private readonly url: URL;
  private readonly userAgent: string;
  private readonly maxResponseBytes: number;

  constructor(private readonly opts: NodeHttpTransportOptions) {
    this.url = new URL(opts.url);
    if (this.url.protocol !== "http:")
      throw new Error(`the node:http OTLP transport takes http:// URLs, not ${this.url.protocol}`);
    this.userAgent = opts.userAgent ? `${opts.userAgent} ${otelUserAgent()}` : otelUserAgent();
    this.maxResponseBytes = opts.maxResponseBytes ?? MAX_RESPONSE_BYTES;
  }

  async send(data: Uint8Array, timeoutMillis: number): Promise<ExportResponse> {
    let headers: Record<string, string>;
    let body: Uint8Array = data;
    try {
      headers = { ...(await this.opts.headers()), "User-Agent": this.userAgent };
      if (this.opts.compression === "gzip") {
        body = await gzipped(data);
        headers["Content-Encoding"] = "gzip";
      }
    } catch (e) {
      return { status: "failure", error: e as Error };
    }
    return this.post(body, headers, timeoutMillis);
  }

  private post(
    body: Uint8Array,
    headers: Record<string, string>,
    timeoutMillis: number,
  ): Promise<ExportResponse> {
    return new Promise((resolve) => {
      let settled = false;
      let req: ClientRequest | undefined;
      const timer = setTimeout(() => {
        settle({ status: "retryable", error: new Error("Request timed out") });
        req?.destroy();
      }, timeoutMillis);
      timer.unref();
      const settle = (r: ExportResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      };
      try {
        req = request(this.url, { method: "POST", headers, agent: this.agent }, (res) =>
          this.read(res, settle),
        );
      } catch (e) {
        // e.g. a header value with a control character (from OTEL_EXPORTER_OTLP_HEADERS)
        settle({ status: "failure", error: e as Error });
        return;
      }
      req.on("error", (error: Error & { code?: unknown }) =>
        settle(
          typeof error.code === "string" && RETRYABLE_NETWORK_CODES.has(error.code)
            ? { status: "retryable", error }
            : { status: "failure", error },
        ),
      );
      req.end(body);
    });
  }

  /** Reads a response (at most maxResponseBytes of its body) and classifies it. */
  private read(res: IncomingMessage, settle: (r: ExportResponse) => void): void {
    const status = res.statusCode ?? 0;
    const success = status >= 200 && status <= 299;
    const retryable = RETRYABLE_STATUS.has(status);
    const tooLarge = (): void => {
      settle({
        status: "failure",
        error: new Error(
          `OTLP export response body exceeded size limit of ${this.maxResponseBytes} bytes`,
        ),
      });
      res.destroy(); // the socket goes too: the rest of the body is never read
    };
    const declared = Number(res.headers["content-length"]);
    if (Number.isFinite(declared) && declared > this.maxResponseBytes) return tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > this.maxResponseBytes) return tooLarge();
      chunks.push(chunk);
    });
    res.on("end", () => {
      const data = Buffer.concat(chunks);
      if (success) settle({ status: "success", data });
      else if (retryable) settle(this.retryable(res));
      else
        settle({
          status: "failure",
          error: new OTLPExporterError(res.statusMessage, status, data.toString("utf8")),
        });
    });
    // the body broke off (the collector went away mid-answer): the status decides, as in OTel
    res.on("error", (error) => {
      if (success) settle({ status: "success" });
      else if (retryable) settle({ ...this.retryable(res), error });
      else settle({ status: "failure", error });
    });
  }

  private retryable(res: IncomingMessage): ExportResponseRetryable {
    const retryInMillis = retryAfterMs(res.headers["retry-after"]);
    return retryInMillis === undefined
      ? { status: "retryable" }
      : { status: "retryable", retryInMillis };
  }

  shutdown(): void {
    this.agent.destroy();
  }
}

/** The single-attempt node:http transport for an `http://` OTLP endpoint. */
export function createNodeHttpTransport(opts: NodeHttpTransportOptions): IExporterTransport {
  return new NodeHttpTransport(opts);
}

/**
 * Retries a retryable answer with OTel's policy: up to RETRY_POLICY.maxRetries
 * more attempts, waiting the Retry-After if the collector gave one, else a
 * backoff growing by 1.5 from 1 s to at most 5 s with ±20 % jitter; it gives
 * up (returning the retryable answer, a failed export) when the wait would end
 * past the deadline the first attempt's timeout set.
 */
export function retryingTransport(inner: IExporterTransport): IExporterTransport {
  const p = RETRY_POLICY;
  return {
    async send(data: Uint8Array, timeoutMillis: number): Promise<ExportResponse> {
      const deadline = Date.now() + timeoutMillis;
      let result = await inner.send(data, timeoutMillis);
      let nextBackoff: number = p.initialBackoffMs;
      let retries = 0;
      while (result.status === "retryable" && retries < p.maxRetries) {
        retries++;
        const jitter = Math.random() * 2 * p.jitter - p.jitter;
        const backoff = Math.max(Math.min(nextBackoff * (1 + jitter), p.maxBackoffMs), 0);
        nextBackoff *= p.multiplier;
        const wait = result.retryInMillis ?? backoff;
        if (wait > deadline - Date.now()) {
          diag.info(
            `OTLP export: retry in ${Math.round(wait)} ms would pass the timeout; giving up`,
          );
          return result;
        }
        await new Promise((r) => setTimeout(r, wait));
        const left = deadline - Date.now();
        if (left <= 0) return result;
        result = await inner.send(data, left);
      }
      if (result.status === "retryable") diag.info(`OTLP export failed after ${retries} retries`);
      return result;
    },
    shutdown(): void {
      inner.shutdown();
    },
  };
}
