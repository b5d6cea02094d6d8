/**
 * Issue #20: the http/protobuf exporter sends over toolgate's node:http /
 * node:https transport (src/telemetry/otlp-http-transport.ts), not OTel's,
 * whose timeout is the socket's idle time and whose `import("http")` loads
 * undici (~3 MB per exporting thread).
 * Against a real node:http OTLP receiver on loopback: the spans arrive and
 * decode; method, path, headers and body equal what OTel's stock transport
 * sends for the same env (OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, Content-Type,
 * User-Agent); gzip when configured; OTel's retry policy (a 503 is retried
 * after ~1 s and delivered once, a Retry-After is waited, a 400 is not
 * retried); the timeout bounds the whole request (a silent or trickling
 * collector, http or https, fails the export); a huge response body is cut
 * off. Against real node:https receivers with certificates made by the real
 * openssl: the CA of OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE is trusted (and
 * the TRACES_ one wins), no CA or another CA fails the export undelivered,
 * mTLS sends OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE / _CLIENT_KEY (and
 * a collector that requires one refuses without), unusable TLS files stop the
 * start-up with config_invalid. In a child process running the real src/
 * code, an export (http and https) leaves undici unloaded (while OTel's stock
 * transport to http://, the control, loads it).
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type ServerOptions } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { ROOT_CONTEXT, SpanKind } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { OTLPExporterBase, OTLPExporterError } from "@opentelemetry/otlp-exporter-base";
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from "@opentelemetry/otlp-exporter-base/node-http";
import {
  ProtobufTraceSerializer,
  TraceExporterMetricsHelper,
} from "@opentelemetry/otlp-transformer";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  type SpanExporter,
} from "@opentelemetry/sdk-trace";
import { exporterFromEnv, Tracing } from "../../src/telemetry/tracing";
import { MAX_RESPONSE_BYTES, retryAfterMs } from "../../src/telemetry/otlp-http-transport";
import { silentLogger } from "../../src/shared/log";
import { ToolgateError } from "../../src/errors";
import { tempDir } from "../helpers/opa";
import { selfSigned, testCa } from "../helpers/tls";
import { transpileSrc } from "../helpers/transpile";

jest.setTimeout(60_000);

const root = join(__dirname, "..", "..");

interface Received {
  at: number;
  method: string | undefined;
  path: string | undefined;
  headers: IncomingMessage["headers"];
  raw: Buffer;
  /** The body, gunzipped when Content-Encoding says gzip. */
  body: Buffer;
  /** Over TLS: the CN of the client certificate the receiver verified, if one was sent. */
  peer?: string;
}

type Answer = (res: ServerResponse, req: IncomingMessage) => void;
const ok: Answer = (res) => {
  res.writeHead(200, { "content-type": "application/x-protobuf" });
  res.end();
};

/**
 * A real OTLP/HTTP receiver on loopback (node:https with `tls`, else
 * node:http). Each request takes the next of `answers` (then `ok`); it records
 * every request it got in full. `handshakes` counts TLS connections
 * established (a client that failed verification never makes one).
 */
async function startReceiver(answers: Answer[] = [], tls?: ServerOptions) {
  const got: Received[] = [];
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      const peer = tls ? (req.socket as TLSSocket).getPeerCertificate().subject?.CN : undefined;
      got.push({
        at: Date.now(),
        method: req.method,
        path: req.url,
        headers: req.headers,
        raw,
        body: req.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw,
        ...(typeof peer === "string" ? { peer } : {}),
      });
      (answers.shift() ?? ok)(res, req);
    });
  };
  const server = tls ? createHttpsServer(tls, onRequest) : createServer(onRequest);
  const tlsErrors: Error[] = [];
  server.on("tlsClientError", (e: Error) => tlsErrors.push(e));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    tlsErrors,
    got,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Sets process.env (OTel's configuration reads it) for the length of `fn`. */
async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

function exportOnce(
  exporter: SpanExporter,
  spans: ReadableSpan[],
): Promise<ExportResult & { ms: number }> {
  const t0 = Date.now();
  return new Promise((r) => exporter.export(spans, (res) => r({ ...res, ms: Date.now() - t0 })));
}

/** toolgate's exporter for `url` (http/protobuf, the default), with process.env as set. */
function toolgateExporter(url: string): SpanExporter {
  const { exporter, protocol } = exporterFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: url });
  expect(protocol).toBe("http/protobuf");
  return exporter;
}

/** One export through toolgate's exporter for `url`, then its shutdown (idle sockets closed). */
async function exportThenShutdown(
  url: string,
  spans: ReadableSpan[],
): Promise<Awaited<ReturnType<typeof exportOnce>>> {
  const ours = toolgateExporter(url);
  try {
    return await exportOnce(ours, spans);
  } finally {
    await ours.shutdown();
  }
}

/** OTel's stock delegate with its own node transport (the reference). */
function stockExporter(url: string): SpanExporter {
  const delegate = createOtlpHttpExportDelegate(
    convertLegacyHttpOptions({ url: `${url}/v1/traces` }, "TRACES", "v1/traces", {
      "Content-Type": "application/x-protobuf",
    }),
    ProtobufTraceSerializer,
    "otlp_http_span_exporter",
    TraceExporterMetricsHelper,
    undefined,
  );
  class Stock extends OTLPExporterBase<ReadableSpan[]> implements SpanExporter {}
  return new Stock(delegate);
}

async function someSpans(n = 3): Promise<ReadableSpan[]> {
  const mem = new InMemorySpanExporter();
  const t = new Tracing({
    env: { OTEL_SERVICE_NAME: "tg-transport" },
    log: silentLogger,
    serviceVersion: "1.0.0",
    exporter: mem,
  });
  for (let i = 0; i < n; i++)
    t.prepareSpan(`authorize tool-${i}`, SpanKind.INTERNAL, ROOT_CONTEXT, { i }).finish();
  await t.flush();
  return [...mem.getFinishedSpans()];
}

/** Span names in an ExportTraceServiceRequest: resource_spans(1) → scope_spans(2) → spans(2) → name(5). */
function spanNames(buf: Buffer): string[] {
  function* fields(start: number, end: number): Generator<[number, number, number, number]> {
    let i = start;
    const varint = (): number => {
      let v = 0;
      for (let mul = 1; ; mul *= 128) {
        if (i >= end) throw new Error("truncated varint");
        const b = buf[i++] as number;
        v += (b & 0x7f) * mul;
        if (b < 0x80) return v;
      }
    };
    while (i < end) {
      const key = varint();
      const wire = key & 7;
      if (wire === 0) varint();
      else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else if (wire === 2) {
        const len = varint();
        if (i + len > end) throw new Error("truncated field");
        yield [Math.floor(key / 8), wire, i, i + len];
        i += len;
      } else throw new Error(`wire type ${wire}`);
    }
  }
  const names: string[] = [];
  for (const [f1, , a1, b1] of fields(0, buf.length))
    if (f1 === 1)
      for (const [f2, , a2, b2] of fields(a1, b1))
        if (f2 === 2)
          for (const [f3, , a3, b3] of fields(a2, b2))
            if (f3 === 2)
              for (const [f4, , a4, b4] of fields(a3, b3))
                if (f4 === 5) names.push(buf.subarray(a4, b4).toString("utf8"));
  return names;
}

const reference = (spans: ReadableSpan[]): Buffer =>
  Buffer.from(ProtobufTraceSerializer.serializeRequest(spans) ?? new Uint8Array());

/** What a request carries that must equal between the two transports. */
function comparable(r: Received) {
  const headers = { ...r.headers };
  for (const k of ["connection", "content-length", "transfer-encoding", "host"]) delete headers[k];
  return { method: r.method, path: r.path, headers, body: r.body.toString("hex") };
}

const ENV_HEADERS = {
  OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=acme,authorization=Bearer%20t0k3n,content-type=text/plain",
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-tenant=traces-only",
};

test("spans arrive and decode; URL, env headers, Content-Type and User-Agent as OTel's transport sends them", async () => {
  const spans = await someSpans(3);
  const rx = await startReceiver();
  try {
    await withEnv(ENV_HEADERS, async () => {
      const ours = toolgateExporter(rx.url);
      const r = await exportOnce(ours, spans);
      expect(r.error).toBeUndefined();
      expect(r.code).toBe(ExportResultCode.SUCCESS);
      await ours.shutdown();
      const stock = stockExporter(rx.url);
      expect((await exportOnce(stock, spans)).code).toBe(ExportResultCode.SUCCESS);
      await stock.shutdown();
    });
    expect(rx.got).toHaveLength(2);
    const [mine, theirs] = rx.got as [Received, Received];
    expect(spanNames(mine.body)).toEqual([
      "authorize tool-0",
      "authorize tool-1",
      "authorize tool-2",
    ]);
    expect(mine.body.equals(reference(spans))).toBe(true);
    expect(mine.method).toBe("POST");
    expect(mine.path).toBe("/v1/traces");
    expect(mine.headers["content-type"]).toBe("application/x-protobuf"); // env cannot override it
    expect(mine.headers["x-tenant"]).toBe("traces-only"); // the TRACES_ variable wins
    expect(mine.headers.authorization).toBe("Bearer t0k3n");
    expect(mine.headers["user-agent"]).toMatch(/^OTel-OTLP-Exporter-JavaScript\/\d+\.\d+\.\d+$/);
    expect(mine.headers["content-encoding"]).toBeUndefined();
    expect(comparable(mine)).toEqual(comparable(theirs));
    // kept alive for the next export, as OTel's agent does
    expect(mine.headers.connection).toBe("keep-alive");
  } finally {
    await rx.close();
  }
});

test("gzip when OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=gzip (and not otherwise)", async () => {
  const spans = await someSpans(20);
  const rx = await startReceiver();
  try {
    await withEnv({ OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: "gzip" }, async () => {
      expect((await exportThenShutdown(rx.url, spans)).code).toBe(ExportResultCode.SUCCESS);
      const stock = stockExporter(rx.url);
      expect((await exportOnce(stock, spans)).code).toBe(ExportResultCode.SUCCESS);
      await stock.shutdown();
    });
    const [mine, theirs] = rx.got as [Received, Received];
    expect(mine.headers["content-encoding"]).toBe("gzip");
    expect(mine.raw.subarray(0, 2).toString("hex")).toBe("1f8b");
    expect(mine.raw.length).toBeLessThan(mine.body.length);
    expect(mine.body.equals(reference(spans))).toBe(true);
    expect(spanNames(mine.body)).toHaveLength(20);
    expect(comparable(mine)).toEqual(comparable(theirs));
  } finally {
    await rx.close();
  }
});

test("a 503 is retried after OTel's backoff (1 s ± 20 %) and the spans are delivered once", async () => {
  const spans = await someSpans(2);
  const rx = await startReceiver([(res) => res.writeHead(503).end("busy")]);
  try {
    const r = await exportThenShutdown(rx.url, spans);
    expect(r.code).toBe(ExportResultCode.SUCCESS);
    expect(rx.got).toHaveLength(2);
    const [first, second] = rx.got as [Received, Received];
    expect(second.body.equals(first.body)).toBe(true);
    const gap = second.at - first.at;
    expect(gap).toBeGreaterThanOrEqual(790);
    expect(gap).toBeLessThan(1500);
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.got).toHaveLength(2); // nothing sent after the success
  } finally {
    await rx.close();
  }
});

test("a Retry-After is waited instead of the backoff", async () => {
  const spans = await someSpans(1);
  const rx = await startReceiver([(res) => res.writeHead(429, { "retry-after": "2" }).end()]);
  try {
    const r = await exportThenShutdown(rx.url, spans);
    expect(r.code).toBe(ExportResultCode.SUCCESS);
    expect(rx.got).toHaveLength(2);
    const [first, second] = rx.got as [Received, Received];
    expect(second.at - first.at).toBeGreaterThanOrEqual(1990); // the backoff alone is ≤ 1.2 s
    expect(second.at - first.at).toBeLessThan(3000);
  } finally {
    await rx.close();
  }
});

test("a Retry-After past the timeout ends the export instead of waiting", async () => {
  const spans = await someSpans(1);
  const rx = await startReceiver([(res) => res.writeHead(503, { "retry-after": "30" }).end()]);
  try {
    await withEnv({ OTEL_EXPORTER_OTLP_TIMEOUT: "2000" }, async () => {
      const r = await exportThenShutdown(rx.url, spans);
      expect(r.code).toBe(ExportResultCode.FAILED);
      expect(r.ms).toBeLessThan(1000);
    });
    expect(rx.got).toHaveLength(1);
  } finally {
    await rx.close();
  }
});

test("a 400 is a failure, not retried; the error carries the status", async () => {
  const spans = await someSpans(1);
  const rx = await startReceiver([(res) => res.writeHead(400).end("bad request body")]);
  try {
    const ours = toolgateExporter(rx.url);
    const r = await exportOnce(ours, spans);
    expect(r.code).toBe(ExportResultCode.FAILED);
    expect(r.error).toBeInstanceOf(OTLPExporterError);
    expect((r.error as OTLPExporterError).code).toBe(400);
    expect((r.error as OTLPExporterError).data).toBe("bad request body");
    await new Promise((r) => setTimeout(r, 1600)); // past any backoff
    await ours.shutdown();
    expect(rx.got).toHaveLength(1);
  } finally {
    await rx.close();
  }
});

test.each([
  ["never answers", "silent", "http"],
  ["answers a byte every 100 ms, for ever", "trickle", "http"],
  ["answers a byte every 100 ms over https, for ever", "trickle", "https"],
] as const)(
  "a collector that %s: the export fails at OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, it does not hang",
  async (_name, mode, scheme) => {
    const spans = await someSpans(1);
    const timers: NodeJS.Timeout[] = [];
    const server = scheme === "https" ? selfSigned() : undefined;
    const rx = await startReceiver(
      [
        (res) => {
          if (mode === "silent") return;
          res.writeHead(200, { "content-type": "application/x-protobuf" });
          timers.push(setInterval(() => res.write("\0"), 100));
        },
      ],
      server && { key: server.key, cert: server.cert },
    );
    try {
      const env: Record<string, string> = { OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "600" };
      if (server) env.OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE = server.caFile;
      await withEnv(env, async () => {
        const r = await exportThenShutdown(rx.url, spans);
        expect(r.code).toBe(ExportResultCode.FAILED);
        expect(r.error?.message).toBe("Request timed out");
        expect(r.ms).toBeGreaterThanOrEqual(590);
        expect(r.ms).toBeLessThan(1500);
      });
      expect(rx.got).toHaveLength(1); // no time was left for a retry
    } finally {
      for (const t of timers) clearInterval(t);
      await rx.close();
    }
  },
  10_000,
);

test.each([
  ["streamed (no Content-Length)", false],
  ["declared by Content-Length", true],
] as const)(
  "a huge response body, %s, is cut off at 64 KiB and fails the export",
  async (_name, declared) => {
    const spans = await someSpans(1);
    const huge = 1024 * 1024 * 1024; // 1 GiB, never built: written in 64 KiB chunks while it drains
    let written = 0;
    let closed!: () => void;
    const connectionClosed = new Promise<void>((r) => (closed = r));
    const rx = await startReceiver([
      (res) => {
        res.writeHead(200, {
          "content-type": "application/x-protobuf",
          ...(declared ? { "content-length": String(huge) } : {}),
        });
        const chunk = Buffer.alloc(64 * 1024, 0x41);
        const pump = (): void => {
          while (written < huge && !res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) return void res.once("drain", pump);
          }
        };
        res.on("close", () => closed());
        pump();
      },
    ]);
    try {
      const ours = toolgateExporter(rx.url);
      const heapBefore = process.memoryUsage().heapUsed;
      const r = await exportOnce(ours, spans);
      expect(r.code).toBe(ExportResultCode.FAILED);
      expect(r.error?.message).toBe(
        `OTLP export response body exceeded size limit of ${MAX_RESPONSE_BYTES} bytes`,
      );
      expect(r.ms).toBeLessThan(2000);
      await connectionClosed; // the client dropped the connection: nothing more is read
      expect(written).toBeLessThan(32 * 1024 * 1024); // socket buffers, not the gigabyte
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(16 * 1024 * 1024);
      await ours.shutdown();
      expect(rx.got).toHaveLength(1); // a failure, not retried
    } finally {
      await rx.close();
    }
  },
);

test("Retry-After as OTel reads it: seconds, an HTTP date, else the backoff", () => {
  expect(retryAfterMs(undefined)).toBeUndefined();
  expect(retryAfterMs("3")).toBe(3000);
  expect(retryAfterMs("0")).toBe(0);
  expect(retryAfterMs("-5")).toBe(0);
  const inTwo = retryAfterMs(new Date(Date.now() + 2000).toUTCString()) as number;
  expect(inTwo).toBeGreaterThan(500);
  expect(inTwo).toBeLessThanOrEqual(2000);
  expect(retryAfterMs("Wed, 21 Oct 2015 07:28:00 GMT")).toBe(0);
  expect(retryAfterMs("soon")).toBeUndefined();
});

/** Who the https tests' receivers are: a self-signed 127.0.0.1, and a CA that issues server and client certificates. */
const tls = {
  self: undefined as ReturnType<typeof selfSigned> | undefined,
  ca: undefined as ReturnType<typeof testCa> | undefined,
  other: undefined as ReturnType<typeof testCa> | undefined,
};
beforeAll(() => {
  tls.self = selfSigned();
  tls.ca = testCa("toolgate test CA");
  tls.other = testCa("another CA");
});
const self = (): ReturnType<typeof selfSigned> => tls.self as ReturnType<typeof selfSigned>;
const ca = (): ReturnType<typeof testCa> => tls.ca as ReturnType<typeof testCa>;
const other = (): ReturnType<typeof testCa> => tls.other as ReturnType<typeof testCa>;

test("https://: spans arrive over TLS to a self-signed collector trusted through OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, as OTel's transport sends them", async () => {
  const spans = await someSpans(2);
  const rx = await startReceiver([], { key: self().key, cert: self().cert });
  try {
    await withEnv(
      { ...ENV_HEADERS, OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: self().caFile },
      async () => {
        const ours = toolgateExporter(rx.url);
        const r = await exportOnce(ours, spans);
        expect(r.error).toBeUndefined();
        expect(r.code).toBe(ExportResultCode.SUCCESS);
        // a second export reuses the kept-alive TLS connection
        expect((await exportOnce(ours, spans)).code).toBe(ExportResultCode.SUCCESS);
        await ours.shutdown();
        const stock = stockExporter(rx.url);
        expect((await exportOnce(stock, spans)).code).toBe(ExportResultCode.SUCCESS);
        await stock.shutdown();
      },
    );
    expect(rx.got).toHaveLength(3);
    const [mine, again, theirs] = rx.got as [Received, Received, Received];
    expect(spanNames(mine.body)).toEqual(["authorize tool-0", "authorize tool-1"]);
    expect(mine.body.equals(reference(spans))).toBe(true);
    expect(again.body.equals(mine.body)).toBe(true);
    expect(mine.headers["x-tenant"]).toBe("traces-only");
    expect(mine.headers.connection).toBe("keep-alive");
    expect(comparable(mine)).toEqual(comparable(theirs));
    expect(mine.peer).toBeUndefined(); // no client certificate configured, none sent
  } finally {
    await rx.close();
  }
});

test.each([
  ["no CA configured (node's default roots)", {}],
  [
    "another CA in OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE (it wins over the right one in OTEL_EXPORTER_OTLP_CERTIFICATE)",
    { OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: "other", OTEL_EXPORTER_OTLP_CERTIFICATE: "right" },
  ],
] as const)(
  "https://: an untrusted collector certificate fails the export, nothing is delivered: %s",
  async (_name, vars) => {
    const spans = await someSpans(1);
    const server = ca().issue({ cn: "collector", ips: ["127.0.0.1"] });
    const rx = await startReceiver([], { key: server.key, cert: server.cert });
    try {
      const env = Object.fromEntries(
        Object.entries(vars).map(([k, v]) => [k, v === "right" ? ca().caFile : other().caFile]),
      );
      await withEnv(env, async () => {
        const r = await exportThenShutdown(rx.url, spans);
        expect(r.code).toBe(ExportResultCode.FAILED);
        expect(r.error?.message).toMatch(/certificate/i);
        expect(r.ms).toBeLessThan(1000); // a verification failure is not retried
      });
      expect(rx.got).toHaveLength(0);
      // the control: the same collector is reached with the right CA (the generic variable)
      await withEnv({ OTEL_EXPORTER_OTLP_CERTIFICATE: ca().caFile }, async () => {
        expect((await exportThenShutdown(rx.url, spans)).code).toBe(ExportResultCode.SUCCESS);
      });
      expect(rx.got).toHaveLength(1);
    } finally {
      await rx.close();
    }
  },
);

test("https:// with mTLS: a collector that requires a client certificate gets the one of _CLIENT_CERTIFICATE / _CLIENT_KEY, and refuses an exporter without one", async () => {
  const spans = await someSpans(1);
  const server = ca().issue({ cn: "collector", ips: ["127.0.0.1"] });
  const client = ca().issue({ cn: "toolgate-sidecar", client: true });
  const rx = await startReceiver([], {
    key: server.key,
    cert: server.cert,
    ca: ca().cert,
    requestCert: true,
    rejectUnauthorized: true,
  });
  try {
    await withEnv({ OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: ca().caFile }, async () => {
      const without = toolgateExporter(rx.url);
      const r = await exportOnce(without, spans);
      await without.shutdown();
      expect(r.code).toBe(ExportResultCode.FAILED);
    });
    expect(rx.got).toHaveLength(0);
    // a client certificate from another CA is refused too
    const stranger = other().issue({ cn: "stranger", client: true });
    await withEnv(
      {
        OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: ca().caFile,
        OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: stranger.certFile,
        OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: stranger.keyFile,
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "1500",
      },
      async () => {
        const wrong = toolgateExporter(rx.url);
        // the server drops the connection (ECONNRESET, retryable as in OTel): retried within the timeout
        expect((await exportOnce(wrong, spans)).code).toBe(ExportResultCode.FAILED);
        await wrong.shutdown();
      },
    );
    expect(rx.got).toHaveLength(0);
    // the generic variables for the client pair, the signal's one for the CA
    await withEnv(
      {
        OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: ca().caFile,
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: client.certFile,
        OTEL_EXPORTER_OTLP_CLIENT_KEY: client.keyFile,
      },
      async () => {
        const r = await exportThenShutdown(rx.url, spans);
        expect(r.error).toBeUndefined();
        expect(r.code).toBe(ExportResultCode.SUCCESS);
      },
    );
    expect(rx.got).toHaveLength(1);
    expect((rx.got[0] as Received).peer).toBe("toolgate-sidecar");
    expect(spanNames((rx.got[0] as Received).body)).toEqual(["authorize tool-0"]);
  } finally {
    await rx.close();
  }
});

test("https://: TLS files that cannot be used stop the start-up with config_invalid; an http:// endpoint ignores them, as OTel's agent does", () => {
  const url = "https://127.0.0.1:4318";
  const dir = tempDir("toolgate-otlp-badtls-");
  const notPem = join(dir, "not.pem");
  writeFileSync(notPem, "hello\n");
  const client = ca().issue({ cn: "c", client: true });
  const strangerKey = other().issue({ cn: "s", client: true }).keyFile;
  const cases: Array<[Record<string, string>, RegExp]> = [
    [
      { OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: join(dir, "missing.pem") },
      /OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE ".*missing\.pem" cannot be read \(ENOENT\)/,
    ],
    [
      // the signal's variable, set but unreadable, does not fall back to the generic one
      {
        OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: dir,
        OTEL_EXPORTER_OTLP_CERTIFICATE: ca().caFile,
      },
      /OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE ".*" cannot be read \(EISDIR\)/,
    ],
    [{ OTEL_EXPORTER_OTLP_CERTIFICATE: notPem }, /OTEL_EXPORTER_OTLP_CERTIFICATE holds no PEM/],
    [
      { OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: client.keyFile },
      /OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY is set without OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE/,
    ],
    [
      { OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: client.certFile },
      /OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set without OTEL_EXPORTER_OTLP_CLIENT_KEY/,
    ],
    [
      {
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: client.certFile,
        OTEL_EXPORTER_OTLP_CLIENT_KEY: strangerKey,
      },
      /are not a usable client certificate and key \(.*key values mismatch/,
    ],
    [
      {
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: client.certFile,
        OTEL_EXPORTER_OTLP_CLIENT_KEY: notPem,
      },
      /are not a usable client certificate and key/,
    ],
  ];
  for (const [vars, message] of cases) {
    const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    Object.assign(process.env, vars);
    try {
      let thrown: unknown;
      try {
        exporterFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: url });
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(ToolgateError);
      expect(thrown).toMatchObject({ code: "config_invalid" });
      expect((thrown as Error).message).toMatch(message);
      expect((thrown as Error).message).not.toContain("PRIVATE KEY"); // names files, never their content
      // http:// never uses them (OTel's agent factory drops ca/cert/key for http:)
      expect(() =>
        exporterFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }),
      ).not.toThrow();
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  }
  // and an endpoint that is neither http:// nor https://
  expect(() =>
    exporterFromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "ftp://127.0.0.1/x" }),
  ).toThrow(/not an http:\/\/ or https:\/\/ URL/);
});

/**
 * The child: a Tracing (the real src/ code) exports one span to the receiver;
 * then, as the control, OTel's stock delegate exports one. Prints whether
 * undici was loaded before, after ours and after the stock one.
 */
const CHILD = `
const { Tracing } = require(process.argv[2]);
const { ROOT_CONTEXT, SpanKind } = require("@opentelemetry/api");
const { OTLPExporterBase } = require("@opentelemetry/otlp-exporter-base");
const { convertLegacyHttpOptions, createOtlpHttpExportDelegate } = require("@opentelemetry/otlp-exporter-base/node-http");
const { ProtobufTraceSerializer, TraceExporterMetricsHelper } = require("@opentelemetry/otlp-transformer");
const undici = () => process.moduleLoadList.some((m) => m.includes("undici"));
const log = { level: "error", error() {}, warn() {}, info() {}, debug() {} };
(async () => {
  const before = undici();
  const t = new Tracing({ env: process.env, log, serviceVersion: "1.0.0" });
  t.prepareSpan("authorize tickets.read", SpanKind.INTERNAL, ROOT_CONTEXT, { i: 1 }).finish();
  await t.flush();
  const stats = t.stats();
  const afterOurs = undici();
  await t.shutdown();
  const stock = new OTLPExporterBase(createOtlpHttpExportDelegate(
    convertLegacyHttpOptions({}, "TRACES", "v1/traces", { "Content-Type": "application/x-protobuf" }),
    ProtobufTraceSerializer, "otlp_http_span_exporter", TraceExporterMetricsHelper, undefined));
  const code = await new Promise((r) => stock.export([], (res) => r(res.code)));
  await stock.shutdown();
  console.log(JSON.stringify({ before, afterOurs, stats, stockCode: code, afterStock: undici() }));
})();
`;

test.each(["http", "https"] as const)(
  "an export to %s:// leaves undici unloaded (a child process running src/; OTel's stock transport to http:// loads it)",
  async (scheme) => {
    const rx = await startReceiver(
      [],
      scheme === "https" ? { key: self().key, cert: self().cert } : undefined,
    );
    try {
      const tracingJs = transpileSrc("src/telemetry/tracing.ts", tempDir("toolgate-otlp-js-"));
      const script = join(tempDir("toolgate-otlp-child-"), "child.js");
      writeFileSync(script, CHILD);
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? "",
        NODE_PATH: join(root, "node_modules"),
        OTEL_EXPORTER_OTLP_ENDPOINT: rx.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
      };
      if (scheme === "https") env.OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE = self().caFile;
      const child = spawn(process.execPath, [script, tracingJs], {
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")));
      child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
      const code = await new Promise<number | null>((r) => child.once("exit", r));
      expect(err).toBe("");
      expect(code).toBe(0); // and it exited by itself: no socket or timer kept it alive
      const res = JSON.parse(out) as {
        before: boolean;
        afterOurs: boolean;
        stats: { exported: number; dropped: number };
        stockCode: number;
        afterStock: boolean;
      };
      expect(res.stats).toMatchObject({ exported: 1, dropped: 0 });
      expect(rx.got.length).toBeGreaterThanOrEqual(1);
      expect(spanNames((rx.got[0] as Received).body)).toEqual(["authorize tickets.read"]);
      expect(res.stockCode).toBe(ExportResultCode.SUCCESS);
      expect(res.before).toBe(false);
      expect(res.afterOurs).toBe(false);
      // the control: the detector sees the load the stock transport causes with import("http")
      // (its import("https") does not load undici: node:https has no lazy fetch exports)
      if (scheme === "http") expect(res.afterStock).toBe(true);
    } finally {
      await rx.close();
    }
  },
);
