#!/usr/bin/env node
// A stand-in OTLP/HTTP trace receiver for the benchmark: accepts POST
// /v1/traces on loopback, drains the body and answers 200 with an empty
// ExportTraceServiceResponse. GET /stats returns {requests, bytes}.
// Prints its port on stdout once listening.
import http from "node:http";

let requests = 0;
let bytes = 0;
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ requests, bytes }));
    return;
  }
  req.on("data", (c) => (bytes += c.length));
  req.on("end", () => {
    if (req.method === "POST" && req.url === "/v1/traces") {
      requests++;
      const json = (req.headers["content-type"] ?? "").includes("json");
      res.writeHead(200, { "content-type": json ? "application/json" : "application/x-protobuf" });
      res.end(json ? "{}" : "");
    } else {
      res.writeHead(404);
      res.end();
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.stdout.write(`${server.address().port}\n`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
