{{/*
Fleet mode (issue #15): the fleet control service (`toolgate control`, values
control.*) and the sidecar side of it (toolgate.fleet.*).

Naming: every object of the control service is <fullname>-fleet-control; its
pods carry app.kubernetes.io/name=<name>-control so that no selector of the
agent Deployment, its Service or its NetworkPolicy ever matches them.
*/}}

{{- define "toolgate.controlFullname" -}}
{{- printf "%s-fleet-control" (include "toolgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "toolgate.controlSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-control" (include "toolgate.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: fleet-control
{{- end -}}

{{- define "toolgate.controlLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "toolgate.controlSelectorLabels" . }}
app.kubernetes.io/part-of: {{ include "toolgate.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "toolgate.controlServiceAccountName" -}}
{{- $sa := .Values.control.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "toolgate.controlFullname" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The URL sidecars reach the control service at; empty: no fleet mode. */}}
{{- define "toolgate.fleetUrl" -}}
{{- if .Values.toolgate.fleet.url -}}
{{- .Values.toolgate.fleet.url -}}
{{- else if .Values.control.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "toolgate.controlFullname" .) .Release.Namespace (int .Values.control.service.port) -}}
{{- end -}}
{{- end -}}

{{/* Where the sidecar reads its projected service-account token. */}}
{{- define "toolgate.fleetTokenDir" -}}/var/run/secrets/toolgate/fleet{{- end -}}

{{/*
Labels a pod with a fleet-mode sidecar carries (the control service's
NetworkPolicy admits them); empty without fleet mode. For parent charts:
  labels:
    {{- include "toolgate.podLabels" .Subcharts.toolgate | nindent 8 }}
*/}}
{{- define "toolgate.podLabels" -}}
{{- if include "toolgate.fleetUrl" . -}}
toolgate-fleet-sidecar: "true"
{{- end -}}
{{- end -}}

{{/*
Egress rules (NetworkPolicyEgressRule items) a fleet-mode pod needs to reach
this release's control service; empty unless control.enabled. For a parent
chart's own egress NetworkPolicy.
*/}}
{{- define "toolgate.fleetEgress" -}}
{{- if and .Values.control.enabled (not .Values.toolgate.fleet.url) -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "toolgate.controlSelectorLabels" . | nindent 10 }}
  ports:
    - port: {{ .Values.control.port }}
      protocol: TCP
{{- end -}}
{{- end -}}

{{/* Fails the render on missing or contradictory fleet values. */}}
{{- define "toolgate.validateFleet" -}}
{{- $c := .Values.control -}}
{{- if $c.enabled -}}
{{- if not $c.postgres.existingSecret -}}
{{- fail "control.enabled needs control.postgres.existingSecret: the name of an existing Secret whose key control.postgres.key (default \"url\") holds the PostgreSQL URL (postgres://user:password@host:5432/database). The chart never takes the URL as a value." -}}
{{- end -}}
{{- if and $c.jwt.jwksUrl $c.jwt.publicKeySecret.name -}}
{{- fail "control.jwt: set jwksUrl or publicKeySecret.name, not both" -}}
{{- end -}}
{{- if not (or $c.jwt.jwksUrl $c.jwt.publicKeySecret.name) -}}
{{- fail "control.enabled needs keys for people's tokens: set control.jwt.jwksUrl or control.jwt.publicKeySecret.name (the control service listens on the pod IP; the committed development key would let anyone mint tokens)" -}}
{{- end -}}
{{- if not $c.jwt.issuer -}}
{{- fail "control.enabled needs control.jwt.issuer (the issuer of people's tokens; the development issuer is not for deployments)" -}}
{{- end -}}
{{- if not (or $c.sidecarAuth.jwksUrl $c.sidecarAuth.jwksConfigMap.name) -}}
{{- fail "control.sidecarAuth: set jwksUrl or jwksConfigMap.name (the keys that verify sidecar credentials)" -}}
{{- end -}}
{{- if and $c.console.enabled $c.console.oidc.issuer (gt (int $c.replicas) 1) (not $c.console.sessionKeySecret.name) -}}
{{- fail (printf "control.console.oidc.issuer with %d control replicas needs control.console.sessionKeySecret.name: an existing Secret holding at least 32 random bytes (e.g. `head -c 48 /dev/urandom`) that every replica seals console sessions with; without it each replica has its own key and a login made on one is refused by the others" (int $c.replicas)) -}}
{{- end -}}
{{- if and $c.pdb.enabled (ge (int $c.pdb.minAvailable) (int $c.replicas)) -}}
{{- fail (printf "control.pdb.minAvailable (%d) must be below control.replicas (%d), or the PodDisruptionBudget blocks every node drain; for a single replica set control.pdb.enabled=false" (int $c.pdb.minAvailable) (int $c.replicas)) -}}
{{- end -}}
{{- end -}}
{{- if include "toolgate.fleetUrl" . -}}
{{- if eq $c.sidecarAuth.agentClaim "kubernetes.io/serviceaccount/name" -}}
{{- $id := .Values.toolgate.agentId -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" $id) -}}
{{- fail (printf "fleet mode: the control service takes the agent id from the pod's service-account name (control.sidecarAuth.agentClaim), but toolgate.agentId %q is not a valid service-account name (lower case letters, digits, '-', '.')" $id) -}}
{{- end -}}
{{- $sa := include "toolgate.serviceAccountName" . -}}
{{- if ne $sa $id -}}
{{- fail (printf "fleet mode: the control service takes the agent id from the pod's service-account name (control.sidecarAuth.agentClaim), so the pod's service account must be named %q (toolgate.agentId), not %q: leave serviceAccount.name empty (with serviceAccount.create) or set it to the agent id" $id $sa) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Files projected into the control pods' /etc/toolgate/secrets. */}}
{{- define "toolgate.controlSecretFiles" -}}
{{- $c := .Values.control -}}
{{- $files := list -}}
{{- with $c.jwt.publicKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "control-jwt.pem") }}{{ end }}{{ end -}}
{{- with $c.sidecarAuth.jwksConfigMap }}{{ if .name }}{{ $files = append $files (dict "kind" "configMap" "name" .name "key" .key "path" "fleet-jwks.json") }}{{ end }}{{ end -}}
{{- with $c.console.sessionKeySecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "console-session.key") }}{{ end }}{{ end -}}
{{- with $c.console.oidc.clientSecretSecret }}{{ if .name }}{{ $files = append $files (dict "kind" "secret" "name" .name "key" .key "path" "console-client-secret") }}{{ end }}{{ end -}}
{{- toJson $files -}}
{{- end -}}

{{/* "true" when the control pods trust the cluster CA (kube-root-ca.crt) for the sidecar JWKS URL. */}}
{{- define "toolgate.controlKubeCA" -}}
{{- $s := .Values.control.sidecarAuth -}}
{{- if and $s.kubeRootCA $s.jwksUrl (not $s.jwksConfigMap.name) -}}true{{- end -}}
{{- end -}}

{{/* The control service's config file (docs/configuration.md). The PostgreSQL URL comes from the environment. */}}
{{- define "toolgate.controlConfig" -}}
{{- $c := .Values.control -}}
{{- $paths := include "toolgate.paths" . | fromYaml -}}
{{- $sec := $paths.secrets -}}
{{- $cfg := dict -}}
{{- $_ := set $cfg "log" (dict "level" $c.logLevel) -}}
{{- $_ = set $cfg "state" (dict "dir" "/var/lib/toolgate") -}}
{{- $ctl := dict "enabled" true "host" "0.0.0.0" "port" (int $c.port) -}}
{{- if $c.adminRole }}{{ $_ = set $ctl "admin_role" $c.adminRole }}{{ end -}}
{{- $cj := dict -}}
{{- with $c.jwt -}}
{{- if .issuer }}{{ $_ = set $cj "issuer" .issuer }}{{ end -}}
{{- if .audience }}{{ $_ = set $cj "audience" .audience }}{{ end -}}
{{- if .rolesClaim }}{{ $_ = set $cj "roles_claim" .rolesClaim }}{{ end -}}
{{- if .jwksUrl }}{{ $_ = set $cj "jwks_url" .jwksUrl }}{{ end -}}
{{- if .publicKeySecret.name }}{{ $_ = set $cj "public_key_file" (printf "%s/control-jwt.pem" $sec) }}{{ end -}}
{{- end -}}
{{- $_ = set $ctl "jwt" $cj -}}
{{- $_ = set $cfg "control" $ctl -}}
{{- $s := $c.sidecarAuth -}}
{{- $fj := dict "issuer" $s.issuer "audience" $s.audience "agent_claim" $s.agentClaim -}}
{{- if $s.jwksConfigMap.name -}}
{{- $_ = set $fj "jwks_file" (printf "%s/fleet-jwks.json" $sec) -}}
{{- else -}}
{{- $_ = set $fj "jwks_url" $s.jwksUrl -}}
{{- end -}}
{{- $_ = set $cfg "fleet" (dict "jwt" $fj) -}}
{{- $con := $c.console -}}
{{- $cc := dict "enabled" $con.enabled -}}
{{- if $con.publicUrl }}{{ $_ = set $cc "public_url" $con.publicUrl }}{{ end -}}
{{- if $con.sessionKeySecret.name }}{{ $_ = set $cc "session_key_file" (printf "%s/console-session.key" $sec) }}{{ end -}}
{{- if $con.traceUrlTemplate }}{{ $_ = set $cc "trace_url_template" $con.traceUrlTemplate }}{{ end -}}
{{- $co := dict -}}
{{- with $con.oidc -}}
{{- if .issuer }}{{ $_ = set $co "issuer" .issuer }}{{ end -}}
{{- if .clientId }}{{ $_ = set $co "client_id" .clientId }}{{ end -}}
{{- if .rolesClaim }}{{ $_ = set $co "roles_claim" .rolesClaim }}{{ end -}}
{{- if .scopes }}{{ $_ = set $co "scopes" .scopes }}{{ end -}}
{{- if .clientSecretSecret.name }}{{ $_ = set $co "client_secret_file" (printf "%s/console-client-secret" $sec) }}{{ end -}}
{{- end -}}
{{- if $co }}{{ $_ = set $cc "oidc" $co }}{{ end -}}
{{- $_ = set $cfg "console" $cc -}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $c.config) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Environment, mounts and volumes shared by the control container and its migration init container. */}}
{{- define "toolgate.controlEnv" -}}
{{- $c := .Values.control -}}
- name: TOOLGATE_CONFIG
  value: {{ (include "toolgate.paths" . | fromYaml).config | quote }}
- name: TOOLGATE_STATE_DIR
  value: /var/lib/toolgate
- name: TMPDIR
  value: /var/lib/toolgate
- name: TOOLGATE_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ $c.postgres.existingSecret }}
      key: {{ $c.postgres.key }}
{{- if include "toolgate.controlKubeCA" . }}
- name: NODE_EXTRA_CA_CERTS
  value: /etc/toolgate/kube-ca/ca.crt
{{- end }}
{{- with $c.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "toolgate.controlVolumeMounts" -}}
- name: config
  mountPath: {{ (include "toolgate.paths" . | fromYaml).config }}
  subPath: config.yaml
  readOnly: true
- name: tmp
  mountPath: /var/lib/toolgate
{{- if ne (include "toolgate.controlSecretFiles" .) "[]" }}
- name: secrets
  mountPath: {{ (include "toolgate.paths" . | fromYaml).secrets }}
  readOnly: true
{{- end }}
{{- if include "toolgate.controlKubeCA" . }}
- name: kube-ca
  mountPath: /etc/toolgate/kube-ca
  readOnly: true
{{- end }}
{{- end -}}
