/**
 * YAML parsing, loaded on first use. The `yaml` package is ~70 modules and
 * ~0.3 MB of source that stays resident once required; a sidecar configured
 * from the environment, with JSON bundle data, never parses YAML, so it never
 * pays for it (issue #20, idle RSS).
 */
import type * as YamlModule from "yaml";

let yaml: typeof YamlModule | undefined;

/** `yaml`'s `parse(text)`: YAML 1.2 (a superset of JSON), loaded on the first call. */
export function parseYaml(text: string): unknown {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  yaml ??= require("yaml") as typeof YamlModule;
  return yaml.parse(text) as unknown;
}
