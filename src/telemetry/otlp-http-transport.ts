/**
 * OTLP/HTTP to an `http://` or `https://` collector, as the transport of OTel's
 * public `createOtlpNetworkExportDelegate` (tracing.ts builds the exporter).
 *
 * Why not OTel's own node transport: its timeout is the socket's idle time, so
 * a collector that trickles its answer holds an export forever, and it reads
 * response bodies up to 4 MB. Also, for `http://`, it gets node:http with
 * `await import("http")` on its first export (its agent factory too): an ESM
 * import of a builtin reads every export of it, and node:http's lazy WebSocket
 * / CloseEvent / MessageEvent exports load undici, node's fetch: ~3 MB of idle
 * RSS in each thread that exports (#20). `require("node:http")`, as this file
 * compiles to, reads only what it names. (node:https has no such exports: OTel's
 * `import("https")` does not load undici, so for https:// the reason is the
 * timeout and the body cap, not memory.)
 *
 * Kept as OTel's transport (otlp-exporter-base 0.301: http-transport-utils,
 * retrying-transport, is-export-retryable, otlp-node-http-env-configuration)
 * does it: the URL, the headers its configuration merges
 * (OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, then the required Content-Type) plus
 * its User-Agent, gzip (OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION), a keep-alive
 * agent, for https:// its TLS settings (tlsFromEnv: the same variables, the
 * same precedence, verification always on), the classification (2xx success;
 * 429/502/503/504 and connection errors retryable, Retry-After honoured;
 * anything else a failure carrying an OTLPExporterError with the status) and
 * the retry policy (up to 5 retries, backoff 1 s × 1.5 per retry up to 5 s,
 * ±20 % jitter, all within the export's timeout). Where it differs, on purpose:
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
 * - a certificate or key file that cannot be read, a key without its
 *   certificate (or the reverse), a key that does not match its certificate,
 *   or a CA file without a PEM certificate stop the start-up with
 *   config_invalid (OTel logs a diag warning, which toolgate does not route,
 *   and goes on without the file);
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
import type * as HttpsModuleNs from "node:https";
import type * as TlsModuleNs from "node:tls";
import { dirname, join, resolve } from "node:path";
import { gzip } from "node:zlib";
import { toolgateError } from "../errors";

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

/**
 * What an https:// agent gets beside keepAlive: OTel's `ca`, `cert`, `key`
 * (PEM). Never `rejectUnauthorized: false`: the collector's certificate is
 * always verified, against `ca` when given, else node's default roots.
 */
export interface OtlpTlsOptions {
  /** PEM certificates to trust instead of node's default roots. */
  ca?: Buffer;
  /** The client certificate (chain) in PEM, for a collector that asks for one (mTLS). */
  cert?: Buffer;
  /** Its private key in PEM. */
  key?: Buffer;
}

/** OTel's getStringFromEnv: unset, empty or blank is undefined; else the value as is. */
function envString(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === "" ? undefined : raw;
}

/**
 * The TLS settings of OTel's node configuration (otlp-node-http-env-configuration
 * 0.301, which keeps them inside its agent factory, out of reach), read the way
 * it reads them: OTEL_EXPORTER_OTLP_<SIGNAL>_CERTIFICATE (CA) /
 * _CLIENT_CERTIFICATE / _CLIENT_KEY, each falling back to the generic
 * OTEL_EXPORTER_OTLP_CERTIFICATE / _CLIENT_CERTIFICATE / _CLIENT_KEY when the
 * signal's own is unset or blank (a set but unreadable signal variable does
 * not fall back), a path resolved against the working directory. From
 * `process.env`, as OTel reads it (the audit worker's is a copy of the main
 * thread's).
 *
 * Stricter than OTel, which logs a diag warning and goes on without the file:
 * throws config_invalid when a named file cannot be read, when a client key
 * comes without its certificate or the reverse, when they do not match, or when
 * the CA file holds no PEM certificate (node would then trust nothing, and
 * every export would fail with a less telling handshake error).
 */
export function tlsFromEnv(
  signal = "TRACES",
  env: NodeJS.ProcessEnv = process.env,
): OtlpTlsOptions {
  const read = (what: string): { name: string; pem: Buffer } | undefined => {
    const own = `OTEL_EXPORTER_OTLP_${signal}_${what}`;
    const generic = `OTEL_EXPORTER_OTLP_${what}`;
    const ownPath = envString(env, own);
    const name = ownPath !== undefined ? own : generic;
    const path = ownPath ?? envString(env, generic);
    if (path === undefined) return undefined;
    try {
      return { name, pem: readFileSync(resolve(process.cwd(), path)) };
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `${name} "${path}" cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}). Fix: point it at a readable PEM file, or unset it`,
      );
    }
  };
  const ca = read("CERTIFICATE");
  const cert = read("CLIENT_CERTIFICATE");
  const key = read("CLIENT_KEY");
  if (ca && !ca.pem.includes("-----BEGIN CERTIFICATE-----"))
    throw toolgateError(
      "config_invalid",
      `${ca.name} holds no PEM certificate. Fix: point it at the PEM file of the CA that signed the collector's certificate`,
    );
  if ((cert === undefined) !== (key === undefined)) {
    const [has, lacks] = cert
      ? [cert.name, cert.name.replace(/CLIENT_CERTIFICATE$/, "CLIENT_KEY")]
      : [
          (key as { name: string }).name,
          (key as { name: string }).name.replace(/CLIENT_KEY$/, "CLIENT_CERTIFICATE"),
        ];
    throw toolgateError(
      "config_invalid",
      `${has} is set without ${lacks}. Fix: set both (mTLS), or neither`,
    );
  }
  const out: OtlpTlsOptions = {};
  if (ca) out.ca = ca.pem;
  if (cert && key) {
    out.cert = cert.pem;
    out.key = key.pem;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      (require("node:tls") as typeof TlsModuleNs).createSecureContext(out);
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `${cert.name} and ${key.name} are not a usable client certificate and key (${(e as Error).message}). Fix: give the PEM certificate and the private key that belongs to it`,
      );
    }
  }
  return out;
}

export interface NodeHttpTransportOptions {
  /** An `http://` or `https://` URL. */
  url: string;
  /** The merged headers, as OTel's configuration hands them (a fresh object each call). */
  headers: () => Promise<Record<string, string>>;
  compression: "gzip" | "none";
  /** Put before OTel's User-Agent, as its `userAgent` option is. */
  userAgent?: string | undefined;
  /** Default MAX_RESPONSE_BYTES. */
  maxResponseBytes?: number;
  /** For an https:// URL (ignored for http://, as OTel's agent factory drops them): tlsFromEnv(). */
  tls?: OtlpTlsOptions;
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
  private readonly agent: Agent;
  private readonly request: typeof request;
  private readonly url: URL;
  private readonly userAgent: string;
  private readonly maxResponseBytes: number;

  constructor(private readonly opts: NodeHttpTransportOptions) {
    this.url = new URL(opts.url);
    if (this.url.protocol === "http:") {
      this.agent = new Agent({ keepAlive: true });
      this.request = request;
    } else if (this.url.protocol === "https:") {
      // loaded on use: node:https (and tls) only for an https:// collector
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const https = require("node:https") as typeof HttpsModuleNs;
      // OTel's agent options: keepAlive, ca, cert, key; verification stays on
      this.agent = new https.Agent({ keepAlive: true, ...opts.tls });
      this.request = https.request;
    } else
      throw new Error(
        `the OTLP transport takes http:// and https:// URLs, not ${this.url.protocol}`,
      );
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
        req = this.request(this.url, { method: "POST", headers, agent: this.agent }, (res) =>
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

/** The single-attempt node:http(s) transport for an `http://` or `https://` OTLP endpoint. */
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
