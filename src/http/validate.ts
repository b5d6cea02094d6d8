import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020, { type ErrorObject, type ValidateFunction } from "ajv/dist/2020";
import { toolgateError } from "../errors";
import type { DecisionRequest } from "../decision/types";
import { packageRoot } from "../util/paths";

let validator: ValidateFunction<DecisionRequest> | undefined;

/** The published request schema, schemas/decision-request.schema.json. */
export function decisionRequestSchema(): Record<string, unknown> {
  return JSON.parse(
    readFileSync(join(packageRoot(), "schemas", "decision-request.schema.json"), "utf8"),
  ) as Record<string, unknown>;
}

function compiled(): ValidateFunction<DecisionRequest> {
  if (validator === undefined) {
    const ajv = new Ajv2020({ allErrors: false, strict: true, allowUnionTypes: true });
    validator = ajv.compile<DecisionRequest>(decisionRequestSchema());
  }
  return validator;
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
