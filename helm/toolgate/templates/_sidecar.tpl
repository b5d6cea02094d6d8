{{/*
toolgate as a native sidecar, for this chart's Deployment and for parent charts.

From a parent chart that lists toolgate as a dependency (agent.enabled=false):

  spec:
    template:
      metadata:
        annotations:
          {{- include "toolgate.podAnnotations" .Subcharts.toolgate | nindent 8 }}
      spec:
        initContainers:
          {{- include "toolgate.sidecar" .Subcharts.toolgate | nindent 10 }}
        containers:
          - name: my-agent
            env:
              {{- include "toolgate.agentEnv" .Subcharts.toolgate | nindent 14 }}
        volumes:
          {{- include "toolgate.volumes" .Subcharts.toolgate | nindent 10 }}

Each template takes the toolgate chart's context (.Subcharts.toolgate in a
parent, "." inside this chart).
*/}}

{{/* Fails the render on contradictory or unsafe values. */}}
{{- define "toolgate.validate" -}}
{{- include "toolgate.validateFleet" . -}}
{{- $t := .Values.toolgate -}}
{{- $c := $t.control -}}
{{- if and $c.service.enabled (not $c.enabled) -}}
{{- fail "toolgate.control.service.enabled needs toolgate.control.enabled" -}}
{{- end -}}
{{- if and $c.jwt.jwksUrl $c.jwt.publicKeySecret.name -}}
{{- fail "toolgate.control.jwt: set jwksUrl or publicKeySecret.name, not both" -}}
{{- end -}}
{{- if and (include "toolgate.controlOnPodIP" .) (not (or $c.jwt.jwksUrl $c.jwt.publicKeySecret.name)) -}}
{{- fail "the control port listens beyond loopback: set toolgate.control.jwt.publicKeySecret.name or toolgate.control.jwt.jwksUrl (the committed development key would let anyone mint control tokens)" -}}
{{- end -}}
{{- $i := $t.identity -}}
{{- if and $i.jwt.jwksUrl $i.jwt.publicKeySecret.name -}}
{{- fail "toolgate.identity.jwt: set jwksUrl or publicKeySecret.name, not both" -}}
{{- end -}}
{{- if and (eq $i.mode "jwt") (not (or $i.jwt.jwksUrl $i.jwt.publicKeySecret.name)) -}}
{{- fail "toolgate.identity.mode=jwt: set toolgate.identity.jwt.publicKeySecret.name or toolgate.identity.jwt.jwksUrl (the development key is not for deployments)" -}}
{{- end -}}
{{- $p := $t.policy -}}
{{- if and (eq $p.source "file") (not (or $p.file.configMap $p.file.volume)) -}}
{{- fail "toolgate.policy.source=file: set toolgate.policy.file.configMap or toolgate.policy.file.volume" -}}
{{- end -}}
{{- if and (eq $p.source "http") (not $p.http.url) -}}
{{- fail "toolgate.policy.source=http: set toolgate.policy.http.url" -}}
{{- end -}}
{{- if and (eq $p.source "oci") (not $p.oci.reference) -}}
{{- fail "toolgate.policy.source=oci: set toolgate.policy.oci.reference" -}}
{{- end -}}
{{- if and $p.signing.keysSecret.name $p.signing.publicKeySecret.name -}}
{{- fail "toolgate.policy.signing: set keysSecret or publicKeySecret, not both" -}}
{{- end -}}
{{- if gt (int $p.polling.minDelaySeconds) (int $p.polling.maxDelaySeconds) -}}
{{- fail "toolgate.policy.polling: minDelaySeconds must not exceed maxDelaySeconds" -}}
{{- end -}}
{{- $w := $t.approvals.webhook -}}
{{- if ne (empty $w.url) (empty $w.secret.name) -}}
{{- fail "toolgate.approvals.webhook: url and secret.name go together" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not $c.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs toolgate.control.service.enabled (a ServiceMonitor scrapes a Service)" -}}
{{- end -}}
{{- if and (eq $t.probes.type "http") (not (include "toolgate.controlOnPodIP" .)) -}}
{{- fail "toolgate.probes.type=http needs the control port on the pod IP (toolgate.control.service.enabled or toolgate.control.host=0.0.0.0)" -}}
{{- end -}}
{{- end -}}

{{/* Adds {name, key, path} to the list of Secret/ConfigMap files projected into /etc/toolgate/secrets. */}}
{{- define "toolgate.secretFiles" -}}
{{- $t := .Values.toolgate -}}
{{- $files := list -}}
{{- with $t.identity.jwt.publicKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "identity-jwt.pem") }}{{ end }}{{ end -}}
{{- with $t.control.jwt.publicKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "control-jwt.pem") }}{{ end }}{{ end -}}
{{- with $t.policy.bearerTokenSecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "bundle-token") }}{{ end }}{{ end -}}
{{- with $t.policy.http.caConfigMap }}{{ if .name }}{{ $files = append $files (dict "kind" "configMap" "name" .name "key" .key "path" "bundle-ca.pem") }}{{ end }}{{ end -}}
{{- with $t.policy.signing.keysSecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "signing-keys.json") }}{{ end }}{{ end -}}
{{- with $t.policy.signing.publicKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "signing-key.pem") }}{{ end }}{{ end -}}
{{- with $t.audit.hmacKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "audit-hmac-key") }}{{ end }}{{ end -}}
{{- with $t.grants.privateKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "grants-key.pem") }}{{ end }}{{ end -}}
{{- toJson $files -}}
{{- end -}}

{{/* toolgate's config file (docs/configuration.md), from the values. */}}
{{- define "toolgate.config" -}}
{{- $t := .Values.toolgate -}}
{{- $paths := include "toolgate.paths" . | fromYaml -}}
{{- $sec := $paths.secrets -}}
{{- $cfg := dict -}}
{{- $_ := set $cfg "agent" (dict "id" $t.agentId) -}}
{{- $agentPort := dict "host" "127.0.0.1" "port" (int $t.agentPort) -}}
{{- if $t.socket.enabled }}{{ $_ = set $agentPort "socket" (include "toolgate.socketPath" .) }}{{ $_ = set $agentPort "socket_mode" $t.socket.mode }}{{ end -}}
{{- $_ = set $cfg "server" (dict "agent" $agentPort) -}}
{{- $_ = set $cfg "log" (dict "level" $t.logLevel) -}}
{{- $_ = set $cfg "state" (dict "dir" $t.state.mountPath) -}}
{{- /* identity */ -}}
{{- $ij := dict -}}
{{- with $t.identity.jwt -}}
{{- if .issuer }}{{ $_ = set $ij "issuer" .issuer }}{{ end -}}
{{- if .audience }}{{ $_ = set $ij "audience" .audience }}{{ end -}}
{{- if .rolesClaim }}{{ $_ = set $ij "roles_claim" .rolesClaim }}{{ end -}}
{{- if .jwksUrl }}{{ $_ = set $ij "jwks_url" .jwksUrl }}{{ end -}}
{{- if .publicKeySecret.name }}{{ $_ = set $ij "public_key_file" (printf "%s/identity-jwt.pem" $sec) }}{{ end -}}
{{- end -}}
{{- $id := dict "mode" $t.identity.mode -}}
{{- if $ij }}{{ $_ = set $id "jwt" $ij }}{{ end -}}
{{- $_ = set $cfg "identity" $id -}}
{{- /* control */ -}}
{{- $ctl := dict "enabled" $t.control.enabled "host" (include "toolgate.controlHost" .) "port" (int $t.control.port) -}}
{{- if $t.control.adminRole }}{{ $_ = set $ctl "admin_role" $t.control.adminRole }}{{ end -}}
{{- $cj := dict -}}
{{- with $t.control.jwt -}}
{{- if .issuer }}{{ $_ = set $cj "issuer" .issuer }}{{ end -}}
{{- if .audience }}{{ $_ = set $cj "audience" .audience }}{{ end -}}
{{- if .rolesClaim }}{{ $_ = set $cj "roles_claim" .rolesClaim }}{{ end -}}
{{- if .jwksUrl }}{{ $_ = set $cj "jwks_url" .jwksUrl }}{{ end -}}
{{- if .publicKeySecret.name }}{{ $_ = set $cj "public_key_file" (printf "%s/control-jwt.pem" $sec) }}{{ end -}}
{{- end -}}
{{- if $cj }}{{ $_ = set $ctl "jwt" $cj }}{{ end -}}
{{- $_ = set $cfg "control" $ctl -}}
{{- /* policy */ -}}
{{- $p := $t.policy -}}
{{- $pol := dict -}}
{{- if $p.entrypoint }}{{ $_ = set $pol "entrypoint" $p.entrypoint }}{{ end -}}
{{- if eq $p.source "file" -}}
{{- $_ = set $pol "source" "file" -}}
{{- $_ = set $pol "bundle" (printf "%s/%s" $paths.bundles $p.file.path) -}}
{{- $_ = set $pol "file" (dict "watch_interval_ms" (int $p.file.watchIntervalMs)) -}}
{{- else if or (eq $p.source "http") (eq $p.source "oci") -}}
{{- $_ = set $pol "source" $p.source -}}
{{- $http := dict "min_delay_seconds" (int $p.polling.minDelaySeconds) "max_delay_seconds" (int $p.polling.maxDelaySeconds) "max_bytes" (int64 $p.http.maxBytes) "timeout_ms" (int $p.http.timeoutMs) -}}
{{- if eq $p.source "http" }}{{ $_ = set $http "url" $p.http.url }}{{ end -}}
{{- if $p.bearerTokenSecret.name }}{{ $_ = set $http "bearer_token_file" (printf "%s/bundle-token" $sec) }}{{ end -}}
{{- if $p.http.caConfigMap.name }}{{ $_ = set $http "ca_file" (printf "%s/bundle-ca.pem" $sec) }}{{ end -}}
{{- $_ = set $pol "http" $http -}}
{{- if eq $p.source "oci" }}{{ $_ = set $pol "oci" (dict "reference" $p.oci.reference "plain_http" $p.oci.plainHttp) }}{{ end -}}
{{- end -}}
{{- $sig := dict -}}
{{- if $p.signing.keysSecret.name }}{{ $_ = set $sig "keys_file" (printf "%s/signing-keys.json" $sec) }}{{ end -}}
{{- if $p.signing.publicKeySecret.name }}{{ $_ = set $sig "public_key_file" (printf "%s/signing-key.pem" $sec) }}{{ end -}}
{{- if $p.signing.keyId }}{{ $_ = set $sig "key_id" $p.signing.keyId }}{{ end -}}
{{- if $p.signing.algorithm }}{{ $_ = set $sig "algorithm" $p.signing.algorithm }}{{ end -}}
{{- if $p.signing.scope }}{{ $_ = set $sig "scope" $p.signing.scope }}{{ end -}}
{{- if $sig }}{{ $_ = set $pol "signing" $sig }}{{ end -}}
{{- if $pol }}{{ $_ = set $cfg "policy" $pol }}{{ end -}}
{{- /* approvals (the webhook secret comes from the environment) */ -}}
{{- $ap := dict -}}
{{- if $t.approvals.webhook.url }}{{ $_ = set $ap "webhook" (dict "url" $t.approvals.webhook.url) }}{{ end -}}
{{- if $t.approvals.requestTtlSeconds }}{{ $_ = set $ap "request_ttl_seconds" (int $t.approvals.requestTtlSeconds) }}{{ end -}}
{{- if $ap }}{{ $_ = set $cfg "approvals" $ap }}{{ end -}}
{{- /* audit */ -}}
{{- $au := dict "redaction" $t.audit.redaction "log_decisions" $t.audit.logDecisions "trail" (dict "enabled" $t.audit.trail) -}}
{{- if $t.audit.hmacKeySecret.name }}{{ $_ = set $au "hmac_key_file" (printf "%s/audit-hmac-key" $sec) }}{{ end -}}
{{- $_ = set $cfg "audit" $au -}}
{{- /* grants */ -}}
{{- $gr := dict -}}
{{- if $t.grants.privateKeySecret.name }}{{ $_ = set $gr "private_key_file" (printf "%s/grants-key.pem" $sec) }}{{ end -}}
{{- if $t.grants.keyId }}{{ $_ = set $gr "key_id" $t.grants.keyId }}{{ end -}}
{{- if $gr }}{{ $_ = set $cfg "grants" $gr }}{{ end -}}
{{- /* fleet (url and credential come from the environment) */ -}}
{{- if $t.fleet.maxStalenessSeconds }}{{ $_ = set $cfg "fleet" (dict "max_staleness_seconds" (int $t.fleet.maxStalenessSeconds)) }}{{ end -}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $t.config) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Pod annotations that roll the pod when the config changes. */}}
{{- define "toolgate.podAnnotations" -}}
checksum/toolgate-config: {{ include "toolgate.config" . | sha256sum }}
{{- end -}}

{{/* The agent port's Unix domain socket (toolgate.socket.enabled): a directory toolgate creates in the shared emptyDir. */}}
{{- define "toolgate.socketPath" -}}
{{- printf "%s/agent/agent.sock" (trimSuffix "/" .Values.toolgate.socket.mountPath) -}}
{{- end -}}

{{/* Environment for the agent container: where its sidecar answers (and its socket, when enabled). */}}
{{- define "toolgate.agentEnv" -}}
- name: TOOLGATE_URL
  value: {{ printf "http://127.0.0.1:%d" (int .Values.toolgate.agentPort) | quote }}
{{- if .Values.toolgate.socket.enabled }}
- name: TOOLGATE_SOCKET
  value: {{ include "toolgate.socketPath" . | quote }}
{{- end }}
{{- end -}}

{{/* volumeMounts items for the agent container: the shared socket volume (toolgate.socket.enabled); empty otherwise. */}}
{{- define "toolgate.agentVolumeMounts" -}}
{{- if .Values.toolgate.socket.enabled -}}
- name: toolgate-socket
  mountPath: {{ .Values.toolgate.socket.mountPath }}
{{- end -}}
{{- end -}}

{{- define "toolgate.probeHandler" -}}
{{- $ctx := index . 0 -}}
{{- $path := index . 1 -}}
{{- $t := $ctx.Values.toolgate -}}
{{- $type := $t.probes.type -}}
{{- if eq $type "auto" }}{{ $type = ternary "http" "exec" (eq (include "toolgate.controlOnPodIP" $ctx) "true") }}{{ end -}}
{{- if eq $type "http" -}}
httpGet:
  path: {{ $path }}
  port: toolgate-ctl
{{- else -}}
exec:
  command:
    - node
    - /app/scripts/healthcheck.mjs
    - {{ printf "http://127.0.0.1:%d%s" (int $t.agentPort) $path }}
{{- end -}}
{{- end -}}

{{/* The sidecar container: an item for the pod's initContainers list. */}}
{{- define "toolgate.sidecar" -}}
{{- include "toolgate.validate" . -}}
{{- $t := .Values.toolgate -}}
{{- $paths := include "toolgate.paths" . | fromYaml -}}
- name: toolgate
  image: {{ include "toolgate.image" . | quote }}
  imagePullPolicy: {{ $t.image.pullPolicy }}
  restartPolicy: Always
  args: ["serve"]
  env:
    - name: TOOLGATE_CONFIG
      value: {{ $paths.config | quote }}
    - name: TOOLGATE_STATE_DIR
      value: {{ $t.state.mountPath | quote }}
    - name: TMPDIR
      value: {{ $t.state.mountPath | quote }}
    {{- with include "toolgate.fleetUrl" . }}
    # fleet mode: kill switches, approvals, budgets and rates come from the
    # control service; the credential is a projected service-account token
    - name: TOOLGATE_FLEET_URL
      value: {{ . | quote }}
    - name: TOOLGATE_FLEET_CREDENTIAL_FILE
      value: {{ printf "%s/token" (include "toolgate.fleetTokenDir" $) | quote }}
    {{- end }}
    {{- if $t.approvals.webhook.secret.name }}
    - name: TOOLGATE_APPROVALS_WEBHOOK_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ $t.approvals.webhook.secret.name }}
          key: {{ $t.approvals.webhook.secret.key }}
    {{- end }}
    {{- with $t.otel.endpoint }}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ . | quote }}
    {{- end }}
    {{- with $t.otel.protocol }}
    - name: OTEL_EXPORTER_OTLP_PROTOCOL
      value: {{ . | quote }}
    {{- end }}
    {{- with $t.otel.serviceName }}
    - name: OTEL_SERVICE_NAME
      value: {{ . | quote }}
    {{- end }}
    # Kubernetes resource attributes from the downward API (as the OpenTelemetry
    # operator names them); the chart's otel.resourceAttributes come last and win.
    - name: OTEL_RESOURCE_ATTRIBUTES_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: OTEL_RESOURCE_ATTRIBUTES_POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    - name: OTEL_RESOURCE_ATTRIBUTES_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: OTEL_RESOURCE_ATTRIBUTES_NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: {{ printf "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),k8s.pod.uid=$(OTEL_RESOURCE_ATTRIBUTES_POD_UID),k8s.namespace.name=$(OTEL_RESOURCE_ATTRIBUTES_NAMESPACE),k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),k8s.container.name=toolgate%s" (ternary (printf ",%s" $t.otel.resourceAttributes) "" (ne $t.otel.resourceAttributes "")) | quote }}
    {{- with $t.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if $t.control.enabled }}
  ports:
    - name: toolgate-ctl
      containerPort: {{ $t.control.port }}
      protocol: TCP
  {{- end }}
  startupProbe:
    {{- include "toolgate.probeHandler" (list . "/health/ready") | nindent 4 }}
    periodSeconds: {{ $t.probes.startup.periodSeconds }}
    failureThreshold: {{ $t.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $t.probes.startup.timeoutSeconds }}
  readinessProbe:
    {{- include "toolgate.probeHandler" (list . "/health/ready") | nindent 4 }}
    periodSeconds: {{ $t.probes.readiness.periodSeconds }}
    failureThreshold: {{ $t.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ $t.probes.readiness.timeoutSeconds }}
  livenessProbe:
    {{- include "toolgate.probeHandler" (list . "/health/live") | nindent 4 }}
    periodSeconds: {{ $t.probes.liveness.periodSeconds }}
    failureThreshold: {{ $t.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $t.probes.liveness.timeoutSeconds }}
  {{- with $t.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $t.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: toolgate-config
      mountPath: {{ $paths.config }}
      subPath: config.yaml
      readOnly: true
    - name: toolgate-state
      mountPath: {{ $t.state.mountPath }}
    {{- if eq $t.policy.source "file" }}
    - name: toolgate-bundles
      mountPath: {{ $paths.bundles }}
      readOnly: true
    {{- end }}
    {{- if ne (include "toolgate.secretFiles" .) "[]" }}
    - name: toolgate-secrets
      mountPath: {{ $paths.secrets }}
      readOnly: true
    {{- end }}
    {{- if include "toolgate.fleetUrl" . }}
    - name: toolgate-fleet-token
      mountPath: {{ include "toolgate.fleetTokenDir" . }}
      readOnly: true
    {{- end }}
    {{- if $t.socket.enabled }}
    - name: toolgate-socket
      mountPath: {{ $t.socket.mountPath }}
    {{- end }}
{{- end -}}

{{/* The sidecar's volumes: items for the pod's volumes list. */}}
{{- define "toolgate.volumes" -}}
{{- $t := .Values.toolgate -}}
- name: toolgate-config
  configMap:
    name: {{ include "toolgate.configMapName" . }}
- name: toolgate-state
  {{- if $t.state.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-state" (include "toolgate.fullname" .)) $t.state.persistence.existingClaim }}
  {{- else }}
  emptyDir:
    {{- with $t.state.emptyDir.sizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
  {{- end }}
{{- if eq $t.policy.source "file" }}
- name: toolgate-bundles
  {{- if $t.policy.file.configMap }}
  configMap:
    name: {{ $t.policy.file.configMap }}
  {{- else }}
  {{- toYaml $t.policy.file.volume | nindent 2 }}
  {{- end }}
{{- end }}
{{- $files := include "toolgate.secretFiles" . | fromJsonArray -}}
{{- if $files }}
- name: toolgate-secrets
  projected:
    defaultMode: 0444
    sources:
      {{- range $files }}
      - {{ .kind }}:
          name: {{ .name }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
      {{- end }}
{{- end }}
{{- if $t.socket.enabled }}
- name: toolgate-socket
  emptyDir:
    {{- with $t.socket.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: 1Mi
{{- end }}
{{- if include "toolgate.fleetUrl" . }}
- name: toolgate-fleet-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .Values.control.sidecarAuth.audience | quote }}
          expirationSeconds: {{ int .Values.control.sidecarAuth.tokenExpirationSeconds }}
          path: token
{{- end }}
{{- end -}}
