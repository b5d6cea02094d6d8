import { request as httpRequest } from "node:http";
import { startToolgate, type Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import { silentLogger } from "../../src/util/log";

/** Starts a real toolgate on a free loopback port with the given TOOLGATE_* env. */
export async function startTestToolgate(env: Record<string, string> = {}): Promise<Toolgate> {
  const config = compileConfig(
    {},
    { TOOLGATE_AGENT_PORT: "0", TOOLGATE_LOG_LEVEL: "silent", ...env },
  );
  return startToolgate(config, silentLogger);
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

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
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method,
        headers: {
          ...(body !== undefined ? { "content-length": String(Buffer.byteLength(body)) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown;
          try {
            json = text === "" ? undefined : JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on("error", reject);
      },
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
