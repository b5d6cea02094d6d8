#!/usr/bin/env node
"use strict";
/**
 * A tiny refund service: the tool backend behind `refunds.issue`. It executes
 * a refund only with a valid toolgate grant for exactly that request — this
 * user, this agent, this amount, this customer, this job, once, in time.
 *
 *   POST /refunds
 *   Authorization: Bearer <grant from toolgate's allow>
 *   {"subject": ..., "action": {"name": "refunds.issue", "properties": {"arguments": {"amount": 20}}},
 *    "resource": {"type": "customer", "id": "cust_1"}, "context": {"job": {...}}}
 *
 * The body is the same request the agent asked toolgate about. Run:
 *   TOOLGATE_JWKS_URL=http://127.0.0.1:8182/.well-known/jwks.json node examples/refund-service/server.js
 */
const { createServer } = require("node:http");
const { createGrantVerifier, grantFromHeaders, isGrantError } = require("toolgate/verify");

/** Builds the service; `now` (epoch ms) is for tests and demos of expiry. */
function createRefundService(opts) {
  const grants = createGrantVerifier({
    audience: opts.audience ?? "tool:refunds.issue",
    jwks: opts.jwksUrl,
    issuer: opts.issuer,
    clockSkewSeconds: opts.clockSkewSeconds,
    now: opts.now,
  });
  const refunds = [];
  const send = (res, status, body) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === "/refunds") return send(res, 200, { refunds });
    if (req.method !== "POST" || req.url !== "/refunds")
      return send(res, 404, { code: "not_found", message: "POST /refunds" });
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > 64 * 1024) req.destroy();
      else chunks.push(c);
    });
    req.on("end", () => {
      let request;
      try {
        request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return send(res, 400, { code: "malformed_json", message: "the body is not JSON" });
      }
      grants.verify(grantFromHeaders(req.headers), request).then(
        (claims) => {
          const args = request.action.properties.arguments;
          const refund = {
            id: `rf_${refunds.length + 1}`,
            customer: request.resource.id,
            amount: args.amount,
            currency: args.currency ?? "EUR",
            // joins this backend's record to toolgate's decision span and trail record
            grant_jti: claims.jti,
            decision_id: claims.decision_id,
            on_behalf_of: claims.sub,
            agent: claims.act.sub,
          };
          refunds.push(refund);
          console.log(JSON.stringify({ event: "refund.issued", ...refund }));
          send(res, 201, refund);
        },
        (e) => {
          if (!isGrantError(e))
            return send(res, 500, { code: "internal_error", message: String(e) });
          console.log(
            JSON.stringify({ event: "refund.refused", code: e.code, message: e.message }),
          );
          send(res, e.status, { code: e.code, message: e.message });
        },
      );
    });
  });
  return { server, refunds };
}

module.exports = { createRefundService };

if (require.main === module) {
  const jwksUrl = process.env.TOOLGATE_JWKS_URL ?? "http://127.0.0.1:8182/.well-known/jwks.json";
  const skew = process.env.GRANT_CLOCK_SKEW_SECONDS;
  const { server } = createRefundService({
    jwksUrl,
    audience: process.env.GRANT_AUDIENCE,
    issuer: process.env.GRANT_ISSUER,
    clockSkewSeconds: skew === undefined ? undefined : Number(skew),
  });
  server.listen(Number(process.env.PORT ?? 8190), "127.0.0.1", () => {
    const { port } = server.address();
    console.log(JSON.stringify({ event: "listening", url: `http://127.0.0.1:${port}` }));
  });
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}
