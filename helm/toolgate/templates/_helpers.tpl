{{/* Chart name. */}}
{{- define "toolgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "toolgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "toolgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toolgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "toolgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "toolgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "toolgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- /* fleet mode with agent ids from service-account names: the account is named after the agent */ -}}
{{- $fleetSA := and (ne (include "toolgate.fleetUrl" .) "") (eq .Values.control.sidecarAuth.agentClaim "kubernetes.io/serviceaccount/name") -}}
{{- default (ternary .Values.toolgate.agentId (include "toolgate.fullname" .) $fleetSA) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding toolgate's config file. */}}
{{- define "toolgate.configMapName" -}}
{{- printf "%s-config" (include "toolgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "toolgate.image" -}}
{{- $img := .Values.toolgate.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The control port's listen address. */}}
{{- define "toolgate.controlHost" -}}
{{- $c := .Values.toolgate.control -}}
{{- if $c.host -}}{{ $c.host }}{{- else if $c.service.enabled -}}0.0.0.0{{- else -}}127.0.0.1{{- end -}}
{{- end -}}

{{/* "true" when the control port listens beyond loopback (Service, NetworkPolicy, http probes). */}}
{{- define "toolgate.controlOnPodIP" -}}
{{- $c := .Values.toolgate.control -}}
{{- $h := include "toolgate.controlHost" . -}}
{{- if and $c.enabled (not (has $h (list "127.0.0.1" "localhost" "::1"))) -}}true{{- end -}}
{{- end -}}

{{/* Mount points inside the sidecar. */}}
{{- define "toolgate.paths" -}}
config: /etc/toolgate/config.yaml
bundles: /etc/toolgate/bundles
secrets: /etc/toolgate/secrets
{{- end -}}
