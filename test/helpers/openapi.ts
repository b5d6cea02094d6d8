/**
 * The OpenAPI documents (docs/openapi.yaml, docs/openapi-control.yaml,
 * docs/openapi-fleet.yaml) as
 * test oracles: a real response is checked against the schema the document
 * gives for its operation and status, compiled with ajv (JSON Schema
 * 2020-12, as OpenAPI 3.1 is), every $ref resolved — within the document,
 * across the two documents, and into schemas/*.schema.json.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { parse } from "yaml";

const root = join(__dirname, "..", "..");

/**
 * Where the documents sit, as a URI: "../schemas/x.schema.json" from
 * docs/ then resolves to the schema's own `$id`.
 */
const BASE = "https://github.com/toolgate/toolgate/";

export type OpenApiDoc = Record<string, unknown> & {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: Record<string, Record<string, unknown>>;
};

export interface Operation {
  operationId?: string;
  parameters?: unknown[];
  requestBody?: unknown;
  responses: Record<string, Record<string, unknown>>;
  "x-error-codes"?: Record<string, string[]>;
  [k: string]: unknown;
}

export const DOC_FILES = ["openapi.yaml", "openapi-control.yaml", "openapi-fleet.yaml"] as const;
export type DocFile = (typeof DOC_FILES)[number];

const docs = new Map<DocFile, OpenApiDoc>();
const names = new WeakMap<object, DocFile>();

/** A document, parsed once (the same object each time). */
export function openapiDoc(file: DocFile): OpenApiDoc {
  let d = docs.get(file);
  if (d === undefined) {
    d = parse(readFileSync(join(root, "docs", file), "utf8")) as OpenApiDoc;
    docs.set(file, d);
    names.set(d, file);
  }
  return d;
}

/** schemas/*.schema.json by file name. */
export function jsonSchemas(): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const f of readdirSync(join(root, "schemas"))
    .filter((n) => n.endsWith(".json"))
    .sort()) {
    out.set(
      f,
      JSON.parse(readFileSync(join(root, "schemas", f), "utf8")) as Record<string, unknown>,
    );
  }
  return out;
}

let ajv: Ajv2020 | undefined;

function compiler(): Ajv2020 {
  if (ajv !== undefined) return ajv;
  const a = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
  addFormats(a);
  for (const s of jsonSchemas().values()) a.addSchema(s);
  for (const f of DOC_FILES) a.addSchema({ ...openapiDoc(f), $id: `${BASE}docs/${f}` });
  ajv = a;
  return a;
}

const pointerPart = (s: string): string => s.replace(/~/g, "~0").replace(/\//g, "~1");

/** The operation, or an error naming what the document lacks. */
export function operationOf(doc: OpenApiDoc, method: string, pathTemplate: string): Operation {
  const op = doc.paths[pathTemplate]?.[method.toLowerCase()];
  if (op === undefined) throw new Error(`the document has no ${method} ${pathTemplate}`);
  return op;
}

/**
 * Asserts that `body`, answered with `status` to `method pathTemplate`, is
 * what the document says: the status is documented for the operation, the
 * body matches the response's schema (JSON, or the text type's), and an
 * error's `code` is one the operation lists for that status (`x-error-codes`).
 */
export function expectResponseMatches(
  doc: OpenApiDoc,
  method: string,
  pathTemplate: string,
  status: number,
  body: unknown,
): void {
  const file = names.get(doc);
  if (file === undefined) throw new Error("pass a document from openapiDoc()");
  const op = operationOf(doc, method, pathTemplate);
  const where = `${method.toUpperCase()} ${pathTemplate} ${status}`;
  let pointer = `/paths/${pointerPart(pathTemplate)}/${method.toLowerCase()}/responses/${status}`;
  let response = op.responses[String(status)];
  if (response === undefined) throw new Error(`${where}: status not documented`);
  const ref = response.$ref;
  if (typeof ref === "string") {
    if (!ref.startsWith("#/")) throw new Error(`${where}: only local response refs (${ref})`);
    pointer = ref.slice(1);
    response = ref
      .slice(2)
      .split("/")
      .reduce<Record<string, unknown>>(
        (o, k) => o[k.replace(/~1/g, "/").replace(/~0/g, "~")] as Record<string, unknown>,
        doc,
      );
  }
  const content = response.content as Record<string, { schema?: unknown }> | undefined;
  if (content === undefined) {
    if (body !== undefined && body !== "")
      throw new Error(`${where}: the document gives no content, got ${JSON.stringify(body)}`);
    return;
  }
  const type =
    Object.keys(content).find((t) => t === "application/json") ?? Object.keys(content)[0];
  if (type === undefined || content[type]?.schema === undefined)
    throw new Error(`${where}: no schema`);
  const validate = compiler().compile({
    $ref: `${BASE}docs/${file}#${pointer}/content/${pointerPart(type)}/schema`,
  });
  if (!validate(body)) {
    throw new Error(
      `${where}: the body does not match the document:\n${JSON.stringify(validate.errors, null, 2)}\nbody: ${JSON.stringify(body, null, 2).slice(0, 4000)}`,
    );
  }
  const codes = op["x-error-codes"]?.[String(status)];
  if (codes !== undefined) {
    const code = (body as { code?: unknown }).code;
    if (typeof code !== "string" || !codes.includes(code))
      throw new Error(
        `${where}: code ${String(code)} is not in x-error-codes (${codes.join(", ")})`,
      );
  }
}

/** The document's path template a concrete path matches (`/a/{id}` matches `/a/x`), if any. */
export function templateOf(doc: OpenApiDoc, path: string): string | undefined {
  const bare = path.split("?")[0] ?? path;
  for (const t of Object.keys(doc.paths)) {
    const re = new RegExp(
      `^${t.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\\?\{[^}]+\\?\}/g, "[^/]+")}$`,
    );
    if (re.test(bare)) return t;
  }
  return undefined;
}
