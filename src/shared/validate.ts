import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020, { type ErrorObject, type ValidateFunction } from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { toolgateError } from "../errors";
import type { DecisionRequest } from "../model";
import { packageRoot } from "./paths";

/** Checks a value against a published schema: the value, typed, or `invalid_request` naming the member. */
export type Validator<T> = (value: unknown, prefix?: string) => T;

/**
 * The schema's own word for a member that is missing or wrong (a full
 * message), where the generic "x must be string" would not do.
 */
const MESSAGE = "x-message";
/** A string's most UTF-16 code units (see schemas()). */
const MAX_UTF16 = "x-max-utf16-length";

let ajv: Ajv2020 | undefined;

/** One ajv for every body on both ports, holding every schema in schemas/ (they refer to each other). */
function schemas(): Ajv2020 {
  if (ajv === undefined) {
    ajv = new Ajv2020({ allErrors: false, strict: true, allowUnionTypes: true });
    addFormats(ajv, ["date-time"]);
    ajv.addKeyword({ keyword: MESSAGE, schemaType: "string" });
    // JavaScript's length (UTF-16 code units), as the control port's bodies were always
    // measured; maxLength counts code points, so an astral character counts once there
    ajv.addKeyword({
      keyword: MAX_UTF16,
      type: "string",
      schemaType: "number",
      validate: (max: number, data: string) => data.length <= max,
    });
    const dir = join(packageRoot(), "schemas");
    for (const name of readdirSync(dir).filter((f) => f.endsWith(".schema.json")))
      ajv.addSchema(JSON.parse(readFileSync(join(dir, name), "utf8")) as object, name);
  }
  return ajv;
}

/** The validator of a published schema (compiled once, on first ask). */
export function validator<T>(name: string): Validator<T> {
  const v = schemas().getSchema<T>(name) as ValidateFunction<T> | undefined;
  if (v === undefined) throw new Error(`no schema ${name} in schemas/`);
  return (value, prefix = "") => {
    if (v(value)) return value;
    throw invalid(v, prefix);
  };
}

function invalid(v: ValidateFunction, prefix: string) {
  const err = v.errors?.[0];
  return toolgateError(
    "invalid_request",
    err ? describe(err, v.schema, prefix) : "the request is invalid",
  );
}

type Node = Record<string, unknown>;
const asNode = (v: unknown): Node | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Node) : undefined;

/** The schema holding the keyword that failed (`#/allOf/0/properties/scope/type` → that scope). */
function failedSchema(root: unknown, schemaPath: string): Node | undefined {
  if (!schemaPath.startsWith("#/")) return undefined;
  let node: unknown = root;
  for (const seg of schemaPath.slice(2).split("/").slice(0, -1)) {
    const key = seg.replace(/~1/g, "/").replace(/~0/g, "~");
    node = Array.isArray(node) ? node[Number(key)] : asNode(node)?.[key];
  }
  return asNode(node);
}

/** A member's schema, in `properties` or in those of an allOf. */
function memberSchema(parent: Node | undefined, name: string): Node | undefined {
  for (const s of [parent, ...((parent?.allOf as unknown[] | undefined) ?? [])]) {
    const member = asNode(asNode(asNode(s)?.properties)?.[name]);
    if (member !== undefined) return member;
  }
  return undefined;
}

const messageOf = (s: Node | undefined): string | undefined =>
  typeof s?.[MESSAGE] === "string" ? s[MESSAGE] : undefined;

function describe(err: ErrorObject, root: unknown, prefix: string): string {
  const where = `${prefix}${err.instancePath}` || "(body)";
  const parent = failedSchema(root, err.schemaPath);
  if (err.keyword === "required") {
    const missing = (err.params as { missingProperty: string }).missingProperty;
    return (
      messageOf(memberSchema(parent, missing)) ??
      `${where === "(body)" ? "" : where + "/"}${missing} is required`.replace(/^\//, "")
    );
  }
  if (err.keyword === "additionalProperties") {
    const member = (err.params as { additionalProperty: string }).additionalProperty;
    if (where === "(body)") return `unknown member ${JSON.stringify(member)}`;
    const at = where.replace(/^\//, "").replace(/\//g, ".");
    const names = Object.keys(asNode(parent?.properties) ?? {}).join(", ");
    return `${at}.${member} is unknown; ${at} may name ${names}`;
  }
  return messageOf(parent) ?? `${where.replace(/^\//, "")} ${err.message ?? "is invalid"}`;
}

let decisionRequest: Validator<DecisionRequest> | undefined;

/**
 * Validates a decision request against the published schema. Throws
 * `invalid_request` naming the first offending member (e.g. "subject/id must
 * be string").
 */
export function validateDecisionRequest(value: unknown, prefix = ""): DecisionRequest {
  decisionRequest ??= validator<DecisionRequest>("decision-request.schema.json");
  return decisionRequest(value, prefix);
}
