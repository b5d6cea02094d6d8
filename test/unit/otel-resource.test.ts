/** OTEL_RESOURCE_ATTRIBUTES parsing and the resource's precedence (src/telemetry/resource.ts). */
import { buildResource, parseResourceAttributes } from "../../src/telemetry/resource";
import { captureLogger } from "../helpers/capture";
import { silentLogger } from "../../src/shared/log";

describe("OTEL_RESOURCE_ATTRIBUTES", () => {
  test("comma-separated key=value, trimmed, percent-decoded, empty entries skipped", () => {
    expect(parseResourceAttributes(" a=1 ,, b%3Dx=v%2Cw ,c=")).toEqual({
      a: "1",
      "b=x": "v,w",
      c: "",
    });
  });

  test.each(["a", "a=1=2", "=v", "a=%E0%A4%A", `a=${"x".repeat(256)}`])("%s is invalid", (raw) => {
    expect(() => parseResourceAttributes(`ok=1,${raw}`)).toThrow();
  });

  test("an invalid value is discarded whole with a warning, never a crash", () => {
    const logs = captureLogger();
    const r = buildResource({ OTEL_RESOURCE_ATTRIBUTES: "ok=1,broken" }, logs.log, "1.0.0");
    expect(r.attributes.ok).toBeUndefined();
    expect(r.attributes["service.name"]).toBe("toolgate");
    expect(logs.lines().some((l) => l.event === "telemetry.resource_attributes_invalid")).toBe(
      true,
    );
  });

  test("precedence: detectors < toolgate's service.* < OTEL_RESOURCE_ATTRIBUTES < OTEL_SERVICE_NAME", () => {
    const mine = buildResource(
      { OTEL_RESOURCE_ATTRIBUTES: "service.instance.id=pod-a,host.name=h1,service.name=x" },
      silentLogger,
      "1.0.0",
    );
    expect(mine.attributes).toMatchObject({
      "service.instance.id": "pod-a",
      "host.name": "h1",
      "service.name": "x",
      "service.version": "1.0.0",
    });
    const named = buildResource(
      { OTEL_RESOURCE_ATTRIBUTES: "service.name=x", OTEL_SERVICE_NAME: "y" },
      silentLogger,
      "1.0.0",
    );
    expect(named.attributes["service.name"]).toBe("y");
    const a = buildResource({}, silentLogger, "1.0.0").attributes["service.instance.id"];
    const b = buildResource({}, silentLogger, "1.0.0").attributes["service.instance.id"];
    expect(a).not.toBe(b);
  });
});
