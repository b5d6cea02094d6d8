import type express from "express";
import { toolgateError, type ToolgateError } from "../errors";
import { sendError } from "./respond";

/**
 * Answers a request for a routed path with another method as 405
 * `method_not_allowed` with the `Allow` header (RFC 9110 §15.5.6), instead of
 * "no such route". Reads the routes registered so far from the app's router,
 * so call it after the last route and before the catch-all 404.
 */
export function answerWrongMethods(
  app: express.Express,
  render: (err: ToolgateError) => unknown,
): void {
  const allowed = new Map<string, Set<string>>();
  for (const layer of app.router.stack) {
    const route = layer.route;
    if (route === undefined || typeof route.path !== "string") continue;
    const methods = allowed.get(route.path) ?? new Set<string>();
    for (const l of route.stack) {
      if (typeof l.method !== "string" || l.method === "") continue; // app.all: any method
      methods.add(l.method.toUpperCase());
      if (l.method === "get") methods.add("HEAD");
    }
    allowed.set(route.path, methods);
  }
  for (const [path, methods] of allowed) {
    if (methods.size === 0) continue;
    const allow = [...methods].sort().join(", ");
    app.all(path, (_req, res) => {
      res.setHeader("Allow", allow);
      sendError(res, toolgateError("method_not_allowed", `use ${allow} on this route`), render);
    });
  }
}
