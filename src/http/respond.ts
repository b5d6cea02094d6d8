import type { ServerResponse } from "node:http";
import { normalizeError, type ToolgateError } from "../errors";

/** Writes a JSON response without express's extra work (etag, content negotiation). */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers?: Record<string, string>,
): void {
  const payload = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.setHeader("Content-Length", Buffer.byteLength(payload));
  res.setHeader("Cache-Control", "no-store");
  if (headers) for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.end(payload);
}

/** Renders an error as `{code, message}` (the OPA face maps codes, see faces/opa.ts). */
export function sendError(
  res: ServerResponse,
  e: unknown,
  render: (err: ToolgateError) => unknown = (err) => err.toJSON(),
): ToolgateError {
  const err = normalizeError(e);
  const headers: Record<string, string> = {};
  if (err.code === "policy_unavailable") headers["Retry-After"] = "1";
  if (err.code === "unauthenticated") headers["WWW-Authenticate"] = 'Bearer realm="toolgate"';
  if (err.status === 413 || err.status === 400) headers.Connection = "close";
  if (!res.headersSent) sendJson(res, err.status, render(err), headers);
  return err;
}
