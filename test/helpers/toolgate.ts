import { request as httpRequest } from "node:http";
import { collect, type HttpResult } from "./net";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { startToolgate, type BuildOptions, type Toolgate } from "../../src/app";
import type { Decision } from "../../src/model";
import { compileConfig } from "../../src/config";
import { silentLogger, type Logger } from "../../src/shared/log";

export interface TestOptions {
  /** OTEL_* variables; default: tracing off unless a span exporter is given. */
  otelEnv?: Record<string, string>;
  spanExporter?: SpanExporter;
  log?: Logger;
}

/**
 * Starts a real toolgate on a free loopback port with the given TOOLGATE_* env,
 * its state (audit trail) in a fresh temp directory.
 */
export async function startTestToolgate(
  env: Record<string, string> = {},
  opts: TestOptions = {},
): Promise<Toolgate> {
  const config = compileConfig(
    {},
    {
      TOOLGATE_AGENT_PORT: "0",
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-state-")),
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      ...env,
    },
  );
  const build: BuildOptions = {
    env: opts.otelEnv ?? (opts.spanExporter ? {} : { OTEL_SDK_DISABLED: "true" }),
  };
  if (opts.spanExporter) build.spanExporter = opts.spanExporter;
  return startToolgate(config, opts.log ?? silentLogger, build);
}

export type { HttpResult } from "./net";

/**
 * A raw HTTP call over loopback: sends exactly the bytes and headers given
 * (fetch would fix up bodies and content types we want to get wrong).
 */
export function http(
  baseUrl: string,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  const url = new URL(path, baseUrl);
  return httpExact(baseUrl, method, url.pathname + url.search, body, headers);
}

/** As `http`, with the path sent exactly as written (no URL normalisation of "..", "%2e"). */
export function httpExact(
  baseUrl: string,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        method,
        path,
        headers: {
          ...(body !== undefined ? { "content-length": String(Buffer.byteLength(body)) } : {}),
          ...headers,
        },
      },
      (res) => collect(res, resolve, reject),
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** POST a JSON value with Content-Type application/json. */
export function postJson(
  baseUrl: string,
  path: string,
  value: unknown,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  return http(baseUrl, "POST", path, JSON.stringify(value), {
    "content-type": "application/json",
    ...headers,
  });
}

/** POST /v1/decisions at `baseUrl` (an agent port): the decision, once the answer is checked to be a 200. */
export async function decideAt(
  baseUrl: string,
  req: unknown,
  headers: Record<string, string> = {},
): Promise<Decision> {
  const res = await postJson(baseUrl, "/v1/decisions", req, headers);
  expect(res.status).toBe(200);
  return res.json as Decision;
}

/** A decision request in the reference deployment's shape. */
export function refRequest(opts: {
  user?: string;
  tool: string;
  args?: Record<string, unknown>;
  customer?: string;
  jobCustomer?: string;
  purpose?: string;
}): Record<string, unknown> {
  const action: Record<string, unknown> = { name: opts.tool };
  if (opts.args) action.properties = { arguments: opts.args };
  return {
    subject: { type: "user", id: opts.user ?? "alice" },
    action,
    resource: { type: "customer", id: opts.customer ?? "cust_1" },
    context: {
      job: {
        id: "job_1",
        purpose: opts.purpose ?? "support_triage",
        customer_id: opts.jobCustomer ?? "cust_1",
      },
    },
  };
}
