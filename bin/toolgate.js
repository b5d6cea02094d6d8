#!/usr/bin/env node
"use strict";
// Node >= 22.15 (package.json engines): toolgate needs node:sqlite and more.
// Checked before anything else loads, so an older node gets one line, not a
// stack trace from deep inside a require.
{
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  if (major < 22 || (major === 22 && minor < 15)) {
    process.stderr.write(
      `toolgate: needs Node.js >= 22.15 (this is ${process.version}); ` +
        "run it through npm (`npx toolgate`, `npm start`: the project pins Node 24 as a dev dependency) " +
        "or install Node.js 24 LTS (https://nodejs.org/)\n",
    );
    process.exit(1);
  }
}
// Defence in depth against prototype pollution (docs/security.md): what
// `node --disable-proto=delete` does, for this process's main realm, so that
// `npm start` and `npx toolgate` get it too. Without the
// Object.prototype.__proto__ accessor, `obj["__proto__"] = v` creates an own
// property instead of replacing obj's prototype. The container image passes
// the flag to node itself (Dockerfile ENTRYPOINT), which also covers worker
// threads. Nothing toolgate loads at run time uses the accessor.
if (Object.prototype.hasOwnProperty.call(Object.prototype, "__proto__")) {
  delete Object.prototype.__proto__;
}
const path = require("node:path");
const fs = require("node:fs");
const entry = path.join(__dirname, "..", "dist", "src", "cli", "main.js");
if (!fs.existsSync(entry)) {
  process.stderr.write(
    "toolgate: not built yet; run `npm run build` (npm start does it for you)\n",
  );
  process.exit(2);
}
require(entry)
  .main(process.argv.slice(2))
  .then((code) => {
    if (code !== 0) process.exitCode = code;
  });
