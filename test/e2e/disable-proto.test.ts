/**
 * Defence in depth against prototype pollution (issue #13): however toolgate
 * is started, the process runs without the Object.prototype.__proto__
 * accessor, so `obj["__proto__"] = v` cannot replace a prototype even if a
 * guard were missed. Real processes: the real bin/toolgate.js (npm start and
 * npx run it), and node with the image's ENTRYPOINT flags.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { execForm, parseDockerfile } from "../helpers/dockerfile";

const root = join(__dirname, "..", "..");
const bin = join(root, "bin", "toolgate.js");

/** Prints whether the accessor exists and what `o["__proto__"] = v` did, in the main thread and a worker. */
const PROBE = `
const probe = () => {
  const o = {};
  o["__proto__"] = { polluted: true };
  return {
    accessor: Object.prototype.hasOwnProperty("__proto__"),
    ownKeys: Object.keys(o),
    prototypeReplaced: Object.getPrototypeOf(o) !== Object.prototype,
  };
};
const { Worker } = require("node:worker_threads");
const main = probe();
const w = new Worker("require('node:worker_threads').parentPort.postMessage((" + probe + ")())", { eval: true });
w.on("message", (worker) => { console.log(JSON.stringify({ main, worker })); w.terminate(); });
`;

const SAFE = { accessor: false, ownKeys: ["__proto__"], prototypeReplaced: false };

test("bin/toolgate.js removes the accessor before it loads toolgate (npm start, npx toolgate)", () => {
  // require the real bin as node would run it (`toolgate version`), then probe
  const r = spawnSync(
    process.execPath,
    [
      "-e",
      `process.argv = [process.argv[0], ${JSON.stringify(bin)}, "version"];
       require(${JSON.stringify(bin)});
       ${PROBE}`,
    ],
    { cwd: root, encoding: "utf8", timeout: 20_000 },
  );
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout.trim().split("\n").pop() as string) as {
    main: typeof SAFE;
  };
  expect(out.main).toEqual(SAFE);
});

test("the image's ENTRYPOINT runs node with --disable-proto=delete: main thread and workers", () => {
  const df = parseDockerfile(join(root, "Dockerfile"));
  const runtime = df.stages[df.stages.length - 1];
  const entry = execForm(
    runtime?.instructions.filter((i) => i.op === "ENTRYPOINT").pop()?.args ?? "[]",
  );
  const node = entry.indexOf("node");
  expect(node).toBeGreaterThan(-1);
  const flags = entry.slice(node + 1).filter((a) => a.startsWith("--"));
  expect(flags).toContain("--disable-proto=delete");
  const r = spawnSync(process.execPath, [...flags, "-e", PROBE], {
    cwd: root,
    encoding: "utf8",
    timeout: 20_000,
  });
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout.trim())).toEqual({ main: SAFE, worker: SAFE });
});
