#!/usr/bin/env node
// A/B of the grant signature algorithm, in one process (issue #20; run `npm run build` first):
//   node scripts/bench/grant-alg.mjs [--batches 60] [--algs p256,ed25519,p384,rsa]
// For each algorithm a GrantIssuer with a key of that type issues the grant of the same
// allow ("read tickets"), in interleaved batches (the order reversing every batch), so all
// share the machine's phases: the median over batches of the mean µs per issue() (claims,
// binding hash, JSON, base64url and the signature), and of toolgate/verify's verifyGrant
// (what a backend pays per call) on the grants it issued. Prints a markdown table.
import { createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { refRequest } from "./mix.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const dist = (p) => require(path.join(ROOT, "dist", "src", p));
const { compileConfig } = dist("config/index.js");
const { GrantIssuer } = dist("grants/issuer.js");
const { createGrantVerifier, MemoryJtiStore } = dist("grants/verify.js");

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const BATCHES = Number(opt("--batches", "60"));
const ALGS = opt("--algs", "p256,ed25519").split(",");
const ISSUE_BATCH = 200;
const VERIFY_BATCH = 50;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-grant-alg-"));
const keyOf = (alg) =>
  alg === "rsa"
    ? generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey
    : alg === "ed25519"
      ? generateKeyPairSync("ed25519").privateKey
      : generateKeyPairSync("ec", { namedCurve: alg === "p384" ? "P-384" : "P-256" }).privateKey;

const req = refRequest({ tool: "tickets.read" });
const verified = {
  agent: { id: "support-triage" },
  subject: { id: "alice", method: "trusted" },
  time_ns: 0,
};
const decision = {
  decision_id: "0193a1c2-0000-7000-8000-000000000000",
  outcome: "allow",
  reasons: [{ code: "granted", message: "granted" }],
  obligations: [],
  policy: { bundle: "support-triage", revision: "r1" },
  evaluated_at: new Date().toISOString(),
  tool: { name: "tickets.read", class: "read" },
};
const variants = [];
for (const alg of ALGS) {
  const file = path.join(dir, `${alg}.pem`);
  const priv = keyOf(alg);
  fs.writeFileSync(file, priv.export({ type: "pkcs8", format: "pem" }));
  // the bare signature over a grant-sized input, as the issuer makes it (DER for ECDSA)
  const digest = alg === "ed25519" ? null : alg === "p384" ? "sha384" : "sha256";
  const data = Buffer.alloc(560, 0x61);
  const pub = createPublicKey(priv);
  const sig = sign(digest, data, priv);
  const rawSign = () => sign(digest, data, priv);
  const rawVerify = () => verify(digest, data, pub, sig);
  const config = compileConfig(
    {},
    { TOOLGATE_GRANTS_PRIVATE_KEY_FILE: file, TOOLGATE_STATE_DIR: dir },
  );
  const issuer = new GrantIssuer(config.grants, "support-triage");
  const jwks = JSON.parse(issuer.jwksJson());
  const verifier = createGrantVerifier({
    jwks,
    audience: "tool:tickets.read",
    issuer: issuer.issuer,
    jtiStore: new MemoryJtiStore(),
  });
  const tokens = Array.from(
    { length: VERIFY_BATCH },
    () => issuer.issue(decision, req, verified, Date.now()).token,
  );
  const header = JSON.parse(Buffer.from(tokens[0].split(".")[0], "base64url").toString());
  variants.push({
    alg,
    jwsAlg: header.alg,
    issuer,
    verifier,
    tokens,
    issue: [],
    verify: [],
    rawSign,
    rawVerify,
    sign: [],
    check: [],
    bytes: tokens[0].length,
  });
}

// check every variant's grants verify, then warm up
for (const v of variants) {
  const claims = await v.verifier.verify(v.tokens[0], req);
  if (claims.tool !== "tickets.read") throw new Error(`${v.alg}: grant does not verify`);
}
for (let w = 0; w < 3; w++)
  for (const v of variants) {
    for (let k = 0; k < ISSUE_BATCH; k++) v.issuer.issue(decision, req, verified, Date.now());
    for (const t of v.tokens) await v.verifier.verify(t, req);
  }

for (let b = 0; b < BATCHES; b++) {
  for (const v of b % 2 ? [...variants].reverse() : variants) {
    let t0 = process.hrtime.bigint();
    for (let k = 0; k < ISSUE_BATCH; k++) v.issuer.issue(decision, req, verified, Date.now());
    v.issue.push(Number(process.hrtime.bigint() - t0) / 1e3 / ISSUE_BATCH);
    t0 = process.hrtime.bigint();
    for (const t of v.tokens) await v.verifier.verify(t, req);
    v.verify.push(Number(process.hrtime.bigint() - t0) / 1e3 / v.tokens.length);
    t0 = process.hrtime.bigint();
    for (let k = 0; k < ISSUE_BATCH; k++) v.rawSign();
    v.sign.push(Number(process.hrtime.bigint() - t0) / 1e3 / ISSUE_BATCH);
    t0 = process.hrtime.bigint();
    for (let k = 0; k < VERIFY_BATCH; k++) v.rawVerify();
    v.check.push(Number(process.hrtime.bigint() - t0) / 1e3 / VERIFY_BATCH);
  }
}
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const f = (x) => x.toFixed(1);
console.log(
  `node ${process.version}, ${os.cpus()[0]?.model ?? "?"}; ${BATCHES} interleaved batches (${ISSUE_BATCH} issues, ${VERIFY_BATCH} verifications each); medians over batches [min–max]`,
);
console.log("");
console.log(
  "| key | JWS alg | crypto.sign µs | crypto.verify µs | GrantIssuer.issue µs | toolgate/verify verifyGrant µs | grant bytes |",
);
console.log("|---|---|---:|---:|---:|---:|---:|");
for (const v of variants)
  console.log(
    `| ${v.alg} | ${v.jwsAlg} | ${f(med(v.sign))} | ${f(med(v.check))} | ${f(med(v.issue))} [${f(Math.min(...v.issue))}–${f(Math.max(...v.issue))}] | ${f(med(v.verify))} [${f(Math.min(...v.verify))}–${f(Math.max(...v.verify))}] | ${v.bytes} |`,
  );
fs.rmSync(dir, { recursive: true, force: true });
