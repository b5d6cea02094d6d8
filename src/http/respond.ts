import type { ServerResponse } from "node:http";
import { normalizeError, type ToolgateError } from "../errors";

/** How a face writes an error body. */
export type Render = (err: ToolgateError) => unknown;

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

/** Writes a text response with the given headers (Content-Type among them). */
export function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string>,
): void {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.end(text);
}

/** Seconds until a retry may succeed, when the error says (429 access_request_rate_limited). */
function retryAfterOf(err: ToolgateError): number | undefined {
  const v = err.details?.retry_after;
  return typeof v === "number" ? v : undefined;
}

/** `{code, message}`, with `retry_after` (seconds) when the error carries one. */
export function errorBody(err: ToolgateError): unknown {
  const retryAfter = retryAfterOf(err);
  return retryAfter === undefined ? err.toJSON() : { ...err.toJSON(), retry_after: retryAfter };
}

/** Renders an error as `{code, message}` (the OPA face maps codes, see faces/opa.ts). */
export function sendError(
  res: ServerResponse,
  e: unknown,
  render: Render = errorBody,
): ToolgateError {
  const err = normalizeError(e);
  const headers: Record<string, string> = {};
  const retryAfter = err.code === "policy_unavailable" ? 1 : retryAfterOf(err);
  if (retryAfter !== undefined) headers["Retry-After"] = String(retryAfter);
  if (err.code === "unauthenticated") headers["WWW-Authenticate"] = 'Bearer realm="toolgate"';
  if (err.status === 413 || err.status === 400) headers.Connection = "close";
  if (!res.headersSent) sendJson(res, err.status, render(err), headers);
  return err;
}
