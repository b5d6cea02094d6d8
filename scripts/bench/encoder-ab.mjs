#!/usr/bin/env node
// The OTLP encoder A/B of issue #18, as recorded: prints scripts/bench/encoder-ab.md
// (npm run bench's "OTLP encoder A/B" section). The A/B itself — the stock
// ProtobufTraceSerializer against a hand-written encoder, two audit-on toolgates
// at c=16 in alternating rounds — ran at commit 0bfbf68
// (`git show 0bfbf68:scripts/bench/encoder-ab.mjs`, runnable on that commit). The
// hand-written encoder lost and was deleted, so there is nothing left to measure.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "encoder-ab.md");
process.stdout.write(fs.readFileSync(file, "utf8"));
