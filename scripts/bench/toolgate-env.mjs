// The environment every benchmark gives a toolgate for its audit setting: audit on as the
// benchmark measures it (spans over OTLP/HTTP to the local receiver, decision log lines, the
// trail, the audit worker thread), or every sink off with no audit thread.
// Used by scripts/bench.mjs, httpab.mjs and memload.mjs, so their toolgates are the same.

/** The audit part of a toolgate's environment; `receiverPort`: the OTLP receiver (audit on). */
export function auditEnv(audit, receiverPort) {
  return audit
    ? {
        TOOLGATE_LOG_LEVEL: "info",
        TOOLGATE_AUDIT_TRAIL_ENABLED: "true",
        TOOLGATE_AUDIT_LOG_DECISIONS: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiverPort}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        OTEL_SERVICE_NAME: "toolgate-bench",
      }
    : {
        TOOLGATE_LOG_LEVEL: "error",
        OTEL_SDK_DISABLED: "true",
        TOOLGATE_AUDIT_TRAIL_ENABLED: "false",
        TOOLGATE_AUDIT_LOG_DECISIONS: "false",
        // every sink off and no audit thread (the Auditor runs on the main thread, idle)
        TOOLGATE_AUDIT_WORKER: "false",
      };
}
