#!/usr/bin/env node
// The platform's ceiling for the benchmark: a bare node:http server (no
// framework, one process, the same Node binary as toolgate) that answers every
// POST with a constant response per path: the status, headers and JSON bytes
// toolgate answered for a representative allow (captured by the bench, see
// captureCeilingResponses). Like toolgate it reads each request body fully
// before it answers. GET /health answers 200. Prints its port on stdout once
// listening.
//
//   node scripts/bench/ceiling.mjs <responses.json>
//   responses.json: {"<path>": {"status": 200, "headers": [["Name", "value"], ...], "body": "<text>"}}
//
// Date, Connection and Keep-Alive are not in the file: node:http adds them
// itself, as it does for toolgate (same keepAliveTimeout, so the same bytes).
import fs from "node:fs";
import http from "node:http";

/** The headers node:http writes on its own; the capture leaves them out. */
export const NODE_OWN_HEADERS = new Set(["date", "connection", "keep-alive", "transfer-encoding"]);

/**
 * Sends one POST with node:http and returns {status, headers, body}: the
 * response's raw headers (names as sent, in order) minus the ones node:http
 * writes on its own, and the body as text.
 */
export function captureResponse(
  base,
  path,
  body,
  headers = { "content-type": "application/json" },
) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      new URL(path, base),
      { method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) } },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const pairs = [];
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            const name = res.rawHeaders[i];
            if (!NODE_OWN_HEADERS.has(name.toLowerCase()))
              pairs.push([name, res.rawHeaders[i + 1]]);
          }
          resolve({
            status: res.statusCode,
            headers: pairs,
            body: Buffer.concat(chunks).toString("utf8"),
          });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const drain = () => undefined;

function serve(file) {
  const routes = new Map();
  for (const [path, r] of Object.entries(JSON.parse(fs.readFileSync(file, "utf8")))) {
    // a string body, as toolgate's sendJson passes to res.end (same write path)
    routes.set(path, { status: r.status, headers: Object.fromEntries(r.headers), body: r.body });
  }
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/health") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok");
      return;
    }
    const route = req.method === "POST" ? routes.get(req.url) : undefined;
    req.on("data", drain); // the whole body, chunk by chunk, before the answer
    req.on("end", () => {
      if (route === undefined) {
        res.writeHead(404, { "content-length": "0" });
        res.end();
        return;
      }
      res.writeHead(route.status, route.headers);
      res.end(route.body);
    });
  });
  server.keepAliveTimeout = 5_000; // as toolgate's agent port
  server.listen(0, "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`));
  process.on("SIGTERM", () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) serve(process.argv[2]);
