import { randomUUID } from "node:crypto";
import type { Attributes } from "@opentelemetry/api";
import {
  defaultResource,
  detectResources,
  hostDetector,
  processDetector,
  resourceFromAttributes,
  type Resource,
} from "@opentelemetry/resources";
import type { Logger } from "../shared/log";

type Env = Record<string, string | undefined>;

/**
 * OTEL_RESOURCE_ATTRIBUTES as the spec reads it: comma-separated key=value,
 * keys and values trimmed and percent-decoded (',' and '=' must be encoded),
 * empty entries skipped. As the spec (and the JS SDK's
 * ResourceAttributesEnvDetector) says, a value with any invalid entry (no '=',
 * an empty key, bad percent-encoding, key or value over 255 characters) is
 * discarded whole, with a warning; it never stops toolgate. Read from `env`,
 * not process.env (the SDK detector's source), so each toolgate in a process
 * has its own.
 */
export function parseResourceAttributes(raw: string): Attributes {
  const out: Attributes = {};
  for (const entry of raw.split(",")) {
    if (entry.trim() === "") continue;
    const kv = entry.split("=");
    if (kv.length !== 2) throw new Error(`"${entry}" is not key=value`);
    const key = decodeURIComponent((kv[0] ?? "").trim());
    const value = decodeURIComponent((kv[1] ?? "").trim());
    if (key === "") throw new Error(`"${entry}" has an empty key`);
    if (key.length > 255 || value.length > 255)
      throw new Error(`"${key}": keys and values are limited to 255 characters`);
    out[key] = value;
  }
  return out;
}

export function resourceAttributesFromEnv(env: Env, log: Logger): Attributes {
  const raw = env.OTEL_RESOURCE_ATTRIBUTES;
  if (raw === undefined || raw.trim() === "") return {};
  try {
    return parseResourceAttributes(raw);
  } catch (e) {
    log.warn("OTEL_RESOURCE_ATTRIBUTES ignored", {
      event: "telemetry.resource_attributes_invalid",
      error: (e as Error).message,
    });
    return {};
  }
}

/**
 * The spans' resource, lowest precedence first: the SDK's defaults
 * (telemetry.sdk.*), host (host.name, host.arch, host.id) and process
 * (process.pid, process.runtime.*, process.executable.*, process.owner; not
 * the command line, which may carry secrets) detectors; toolgate's
 * service.name, service.version and a random service.instance.id for this
 * toolgate; OTEL_RESOURCE_ATTRIBUTES (which may set any of those, e.g. the
 * chart's k8s.* attributes); OTEL_SERVICE_NAME.
 *
 * host.id is read asynchronously (/etc/machine-id): the span processor waits
 * for it before the first export.
 */
export function buildResource(env: Env, log: Logger, serviceVersion: string): Resource {
  const detected = detectResources({ detectors: [hostDetector, processDetector] });
  const withoutCommandLine = resourceFromAttributes(
    Object.fromEntries(
      detected
        .getRawAttributes()
        .filter(([k]) => k !== "process.command_args" && k !== "process.command"),
    ),
  );
  const serviceName = env.OTEL_SERVICE_NAME?.trim();
  return defaultResource()
    .merge(withoutCommandLine)
    .merge(
      resourceFromAttributes({
        "service.name": "toolgate",
        "service.version": serviceVersion,
        "service.instance.id": randomUUID(),
      }),
    )
    .merge(resourceFromAttributes(resourceAttributesFromEnv(env, log)))
    .merge(
      serviceName !== undefined && serviceName !== ""
        ? resourceFromAttributes({ "service.name": serviceName })
        : null,
    );
}
