#!/usr/bin/env node
// What a grant adds to a decision, in process (run `npm run build` first):
//   node scripts/bench/grant.mjs [--iterations N] [--alg p256|p384|rsa|ed25519]
// Decider.decide for two allows (refunds.issue 20, tickets.read), built
// without audit, with grants off and on (a configured key), in interleaved
// batches; plus the parts of the grant alone: the binding hash (JCS +
// SHA-256) and GrantIssuer.issue (claims + JSON + base64url + sign).
import { generateKeyPairSync } from "node:crypto";
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
const { buildParts } = dist("app.js");
const { silentLogger } = dist("shared/log.js");
const { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } = dist("approvals/binding.js");

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const iterations = Number(opt("--iterations", "20000"));
const alg = opt("--alg", "p256");

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-grant-bench-"));
const keyFile = path.join(dir, "grant.pem");
const { privateKey } =
  alg === "rsa"
    ? generateKeyPairSync("rsa", { modulusLength: 2048 })
    : alg === "ed25519"
      ? generateKeyPairSync("ed25519")
      : generateKeyPairSync("ec", { namedCurve: alg === "p384" ? "P-384" : "P-256" });
fs.writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));

async function decider(grants) {
  const config = compileConfig(
    {},
    {
      TOOLGATE_STATE_DIR: dir,
      TOOLGATE_GRANTS_ENABLED: String(grants),
      TOOLGATE_GRANTS_PRIVATE_KEY_FILE: keyFile,
    },
  );
  const parts = await buildParts(config, silentLogger, { audit: false, approvals: false });
  await parts.bundles.start();
  return parts;
}
const off = await decider(false);
const on = await decider(true);
const reqs = [
  refRequest({ tool: "refunds.issue", args: { amount: 20, currency: "EUR" } }),
  refRequest({ tool: "tickets.read" }),
];
const texts = reqs.map((r) => JSON.stringify(r));
const ctx = { face: "native" };
for (const [i, r] of reqs.entries()) {
  const a = off.decider.decideSync(r, ctx, texts[i]).decision;
  const b = on.decider.decideSync(r, ctx, texts[i]).decision;
  if (a.outcome !== "allow" || b.outcome !== "allow" || a.grant || !b.grant)
    throw new Error("expected allow without / with a grant");
}

const BATCH = 200;
/** Mean µs per call of fn over batches; returns the median batch mean. */
function variants(list, iters) {
  const means = list.map(() => []);
  for (let w = 0; w < 2000; w++) for (const v of list) v.fn(w);
  const batches = Math.ceil(iters / BATCH);
  for (let b = 0; b < batches; b++) {
    const order = b % 2 ? [...list.keys()].reverse() : [...list.keys()];
    for (const i of order) {
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < BATCH; k++) list[i].fn(k);
      means[i].push(Number(process.hrtime.bigint() - t0) / BATCH / 1e3);
    }
  }
  return list.map((v, i) => {
    const s = means[i].sort((x, y) => x - y);
    return {
      name: v.name,
      median_us: s[Math.floor(s.length / 2)],
      p10_us: s[Math.floor(s.length / 10)],
    };
  });
}

const issuer = on.grants;
const sample = on.decider.decideSync(reqs[0], ctx, texts[0]).decision;
const verified = {
  agent: { id: "support-triage" },
  subject: { id: "alice", method: "trusted" },
  time_ns: 0,
};
const results = variants(
  [
    {
      name: "decide, grants off",
      fn: (k) => off.decider.decideSync(reqs[k & 1], ctx, texts[k & 1]),
    },
    { name: "decide, grants on", fn: (k) => on.decider.decideSync(reqs[k & 1], ctx, texts[k & 1]) },
    {
      name: "bindingHash alone",
      fn: (k) => bindingHash(reqs[k & 1], DEFAULT_BINDING_CONTEXT_MEMBERS),
    },
    {
      name: "GrantIssuer.issue alone",
      fn: (k) => issuer.issue(sample, reqs[k & 1], verified, Date.now()),
    },
  ],
  iterations,
);
console.log(
  `node ${process.version}, ${os.cpus()[0]?.model ?? "?"}, key ${alg}, ${iterations} calls per variant`,
);
for (const r of results)
  console.log(
    `  ${r.name.padEnd(26)} ${r.median_us.toFixed(2).padStart(8)} µs/call (median of batch means; p10 ${r.p10_us.toFixed(2)})`,
  );
const [a, b] = results;
console.log(
  `  added by a grant:          ${(b.median_us - a.median_us).toFixed(2).padStart(8)} µs/decision`,
);
on.bundles.stop();
off.bundles.stop();
fs.rmSync(dir, { recursive: true, force: true });
