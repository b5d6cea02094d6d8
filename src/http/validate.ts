import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020, { type ErrorObject, type ValidateFunction } from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { toolgateError } from "../errors";
import type { DecisionRequest } from "../model";
import { packageRoot } from "../shared/paths";

/** A published schema from schemas/. */
export function loadSchema(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(packageRoot(), "schemas", name), "utf8")) as Record<
    string,
    unknown
  >;
}

/** The published request schema, schemas/decision-request.schema.json. */
export function decisionRequestSchema(): Record<string, unknown> {
  return loadSchema("decision-request.schema.json");
}

let ajv: Ajv2020 | undefined;
const compiledSchemas = new Map<string, ValidateFunction>();

function compiledSchema<T>(name: string): ValidateFunction<T> {
  let v = compiledSchemas.get(name);
  if (v === undefined) {
    if (ajv === undefined) {
      ajv = new Ajv2020({ allErrors: false, strict: true, allowUnionTypes: true });
      addFormats(ajv, ["date-time"]);
    }
    v = ajv.compile(loadSchema(name));
    compiledSchemas.set(name, v);
  }
  return v as ValidateFunction<T>;
}

function compiled(): ValidateFunction<DecisionRequest> {
  return compiledSchema<DecisionRequest>("decision-request.schema.json");
}

/** Validates against any published schema; throws `invalid_request` naming the member. */
export function validateAgainst<T>(name: string, value: unknown, prefix = ""): T {
  const v = compiledSchema<T>(name);
  if (v(value)) return value;
  const err = v.errors?.[0];
  throw toolgateError("invalid_request", err ? describe(err, prefix) : "the request is invalid");
}

function describe(err: ErrorObject, prefix: string): string {
  const where = `${prefix}${err.instancePath}` || "(body)";
  if (err.keyword === "required") {
    const missing = (err.params as { missingProperty: string }).missingProperty;
    return `${where === "(body)" ? "" : where + "/"}${missing} is required`.replace(/^\//, "");
  }
  return `${where.replace(/^\//, "")} ${err.message ?? "is invalid"}`;
}

/**
 * Validates a decision request against the published schema. Throws
 * `invalid_request` naming the first offending member (e.g. "subject/id must
 * be string").
 */
export function validateDecisionRequest(value: unknown, prefix = ""): DecisionRequest {
  const v = compiled();
  if (v(value)) return value;
  const err = v.errors?.[0];
  throw toolgateError("invalid_request", err ? describe(err, prefix) : "the request is invalid");
}
