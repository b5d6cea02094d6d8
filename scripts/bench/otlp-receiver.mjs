#!/usr/bin/env node
// A stand-in OTLP/HTTP trace receiver for the benchmark: accepts POST
// /v1/traces on loopback, reads the body, counts the spans in it (protobuf or
// JSON, gzip or not) and answers 200 with an empty ExportTraceServiceResponse.
// GET /stats returns {requests, bytes, spans, undecodable}. Prints its port on
// stdout once listening.
import http from "node:http";
import zlib from "node:zlib";

let requests = 0;
let bytes = 0;
let spans = 0;
let undecodable = 0;

/** A protobuf message's fields as [field number, wire type, value or [start, end) of a LEN]. */
function* fields(buf, start, end) {
  let i = start;
  const varint = () => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (i >= end) throw new Error("truncated varint");
      const b = buf[i++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
  };
  while (i < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) yield [field, wire, varint()];
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) {
      const len = varint();
      if (i + len > end) throw new Error("truncated field");
      yield [field, wire, [i, i + len]];
      i += len;
    } else throw new Error(`wire type ${wire}`);
  }
}

/**
 * Spans in an ExportTraceServiceRequest: resource_spans (1) → scope_spans (2)
 * → spans (2).
 */
function protobufSpans(buf) {
  let n = 0;
  for (const [f1, w1, rs] of fields(buf, 0, buf.length)) {
    if (f1 !== 1 || w1 !== 2) continue;
    for (const [f2, w2, ss] of fields(buf, rs[0], rs[1])) {
      if (f2 !== 2 || w2 !== 2) continue;
      for (const [f3, w3] of fields(buf, ss[0], ss[1])) if (f3 === 2 && w3 === 2) n++;
    }
  }
  return n;
}

function jsonSpans(text) {
  let n = 0;
  for (const rs of JSON.parse(text).resourceSpans ?? [])
    for (const ss of rs.scopeSpans ?? []) n += (ss.spans ?? []).length;
  return n;
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ requests, bytes, spans, undecodable }));
    return;
  }
  const chunks = [];
  req.on("data", (c) => {
    bytes += c.length;
    chunks.push(c);
  });
  req.on("end", () => {
    if (req.method === "POST" && req.url === "/v1/traces") {
      requests++;
      const json = (req.headers["content-type"] ?? "").includes("json");
      try {
        let body = Buffer.concat(chunks);
        if (req.headers["content-encoding"] === "gzip") body = zlib.gunzipSync(body);
        spans += json ? jsonSpans(body.toString("utf8")) : protobufSpans(body);
      } catch {
        undecodable++;
      }
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
