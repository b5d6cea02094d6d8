/**
 * Issue #17 — toolgate/client's types are the wire's types. openapi-typescript
 * turns docs/openapi.yaml (with the schemas/*.schema.json it references) into
 * TypeScript; the real compiler then checks, for every body the client sends
 * or reads, that the client's type and the generated one are assignable both
 * ways and name the same members at every depth.
 *
 * The same compiler run proves the check can fail: copies of the generated
 * file, each with one drift (a member's type changed, a required member added,
 * a member dropped), must each produce an error. The program has no Node
 * types and the DOM lib: the client uses no Node API.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(__dirname, "..", "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);
const nodeBin = bin("node");

/** The checks, written against `gen` (a generated module) and the client's sources. */
function checkFile(gen: string): string {
  return `
import type { paths, components } from "./${gen}";
import type * as C from ${JSON.stringify(join(root, "src", "client"))};

// members named in an object type, index signatures left out
type Known<T> = keyof { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };
// every member path ("a.b", "a.list[].c"), at every depth
type Paths<T, P extends string = ""> = T extends readonly (infer E)[]
  ? Paths<E, \`\${P}[]\`>
  : T extends object
    ? { [K in Known<T> & string]-?: \`\${P}.\${K}\` | Paths<NonNullable<T[K]>, \`\${P}.\${K}\`> }[Known<T> & string]
    : never;
// openapi-typescript adds a schema file's $defs as a member: not part of the body
type Body<T> = Omit<T, "$defs">;

declare function same<A, B>(
  _a: [A] extends [B] ? ([B] extends [A] ? true : "the generated type is not assignable to the client's") : "the client's type is not assignable to the generated",
  _onlyClient: [Exclude<Paths<A>, Paths<B>>] extends [never] ? [] : ["members only the client has", Exclude<Paths<A>, Paths<B>>],
  _onlyGenerated: [Exclude<Paths<B>, Paths<A>>] extends [never] ? [] : ["members only the spec has", Exclude<Paths<B>, Paths<A>>],
): void;
declare function reads<Client, Generated>(_a: [Generated] extends [Client] ? true : "the client cannot read this answer"): void;

type Req<P extends keyof paths, M extends "post" | "get"> = NonNullable<paths[P][M]> extends { requestBody?: { content: { "application/json": infer B } } } ? B : never;
type Res<P extends keyof paths, M extends "post" | "get", S extends number> = NonNullable<paths[P][M]> extends { responses: { [K in S]: { content: { "application/json": infer B } } } } ? B : never;

same<C.DecisionRequest, Body<Req<"/v1/decisions", "post">>>(true, [], []);
same<C.Decision, Res<"/v1/decisions", "post", 200>>(true, [], []);
same<C.AccessRequestBody, Body<Req<"/access/v1/requests", "post">>>(true, [], []);
same<C.AccessRequestTask, Res<"/access/v1/requests", "post", 201>>(true, [], []);
same<C.AccessRequestTask, Res<"/access/v1/requests/{id}", "get", 200>>(true, [], []);
same<C.AccessRequestTask, Res<"/access/v1/requests/{id}/cancel", "post", 200>>(true, [], []);
same<C.Approval, NonNullable<Res<"/access/v1/requests/{id}", "get", 200>["result"]>["approval"]>(true, [], []);
same<C.ActionReport, Body<Req<"/v1/actions", "post">>>(true, [], []);
same<C.ActionSearchRequest, Body<Req<"/access/v1/search/action", "post">>>(true, [], []);
same<C.ActionSearchResponse, Res<"/access/v1/search/action", "post", 200>>(true, [], []);
reads<C.ErrorBody, components["schemas"]["Error"]>(true);
`;
}

/** One drift per copy: [name, text to find in the Decision schema or a body, replacement]. */
const DRIFTS: Array<[string, RegExp, string]> = [
  ["grant-type", /(\n\s+grant\?: )string;/, "$1number;"],
  ["new-required-member", /(\n\s+evaluated_at: string;)/, "$1\n            audit_ref: string;"],
  ["dropped-member", /\n\s+\/\*\*[^\n]*\*\/\n\s+call_id\?: string;(?=\n\s+\/\*\* @enum)/, ""],
];

describe("toolgate/client types match docs/openapi.yaml and schemas/*.schema.json", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "toolgate-client-types-"));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test("mutually assignable with the same members; each drift of the spec fails the check", () => {
    execFileSync(
      nodeBin,
      [
        join(root, "node_modules", "openapi-typescript", "bin", "cli.js"),
        join(root, "docs", "openapi.yaml"),
        "--empty-objects-unknown",
        "-o",
        join(dir, "gen.ts"),
      ],
      { stdio: "pipe" },
    );
    const gen = readFileSync(join(dir, "gen.ts"), "utf8");
    writeFileSync(join(dir, "check.ts"), checkFile("gen"));
    const files = ["check.ts"];
    for (const [name, find, replace] of DRIFTS) {
      const drifted = gen.replace(find, replace);
      expect(drifted).not.toBe(gen); // the drift applies: the pattern still finds its member
      writeFileSync(join(dir, `gen-${name}.ts`), drifted);
      writeFileSync(join(dir, `check-${name}.ts`), checkFile(`gen-${name}`));
      files.push(`check-${name}.ts`);
    }
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          lib: ["ES2022", "DOM"],
          types: [],
          module: "commonjs",
          moduleResolution: "node10",
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          noImplicitOverride: true,
          isolatedModules: true,
          skipLibCheck: false,
          noEmit: true,
        },
        files,
      }),
    );
    const r = spawnSync(
      nodeBin,
      [bin("tsc"), "-p", join(dir, "tsconfig.json"), "--pretty", "false"],
      {
        encoding: "utf8",
      },
    );
    const out = r.stdout + r.stderr;
    const errorsIn = (file: string) =>
      out.split("\n").filter((l) => l.startsWith(file + "(") || l.includes(`/${file}(`));
    // the real spec: no error anywhere (client sources included)
    expect(
      out.split("\n").filter((l) => l.includes("error TS") && !/check-[\w-]+\.ts\(/.test(l)),
    ).toEqual([]);
    // each drift: at least one error, in its own check file
    for (const [name] of DRIFTS) expect(errorsIn(`check-${name}.ts`).length).toBeGreaterThan(0);
    expect(r.status).not.toBe(0);
  }, 120_000);
});
