#!/usr/bin/env node
"use strict";
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
