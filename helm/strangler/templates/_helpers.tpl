{{/* Names and labels. */}}
{{- define "strangler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strangler.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "strangler.configMapName" -}}
{{- .Values.config.existingConfigMap | default (printf "%s-config" (include "strangler.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{- define "strangler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strangler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "strangler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "strangler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "strangler.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Timings, in whole seconds. */}}
{{- define "strangler.drainSeconds" -}}
{{- int .Values.config.drainTimeoutSeconds }}
{{- end }}

{{- define "strangler.preStopSeconds" -}}
{{- int .Values.strangler.preStopSleepSeconds }}
{{- end }}

{{/* The app outlives strangler's drain: it still answers the requests strangler is finishing. */}}
{{- define "strangler.appPreStopSeconds" -}}
{{- if kindIs "invalid" .Values.app.preStopSleepSeconds }}
{{- add (include "strangler.preStopSeconds" . | int) (include "strangler.drainSeconds" . | int) }}
{{- else }}
{{- int .Values.app.preStopSleepSeconds }}
{{- end }}
{{- end }}

{{- define "strangler.longestPreStop" -}}
{{- $s := include "strangler.preStopSeconds" . | int }}
{{- if eq .Values.mode "sidecar" }}
{{- max $s (include "strangler.appPreStopSeconds" . | int) }}
{{- else }}
{{- $s }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: longer than any preStop delay plus the drain. */}}
{{- define "strangler.graceSeconds" -}}
{{- $needed := add (include "strangler.preStopSeconds" . | int) (include "strangler.drainSeconds" . | int) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (max $needed (include "strangler.longestPreStop" . | int)) (int .Values.terminationGraceMarginSeconds) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* preStop hook sleeping .seconds (dict "root" $ "seconds" N). Nothing for 0. */}}
{{- define "strangler.preStopHook" -}}
{{- $seconds := int .seconds }}
{{- if gt $seconds 0 }}
lifecycle:
  preStop:
    {{- if eq .root.Values.lifecycle.sleepAction "native" }}
    sleep:
      seconds: {{ $seconds }}
    {{- else }}
    exec:
      command: ["/bin/sleep", "{{ $seconds }}"]
    {{- end }}
{{- end }}
{{- end }}

{{/* Upstreams of the rendered configuration: the values, plus the app in sidecar mode. */}}
{{- define "strangler.upstreams" -}}
{{- $ups := deepCopy (.Values.config.upstreams | default dict) }}
{{- if eq .Values.mode "sidecar" }}
{{- $name := .Values.app.upstreamName }}
{{- $app := dict "endpoints" (list (printf "127.0.0.1:%d" (int .Values.app.port))) }}
{{- $_ := set $ups $name (mergeOverwrite $app (get $ups $name | default dict)) }}
{{- end }}
{{- toYaml $ups }}
{{- end }}

{{/* Fails the render on values that cannot work. */}}
{{- define "strangler.validate" -}}
{{- $mode := .Values.mode }}
{{- if not (has $mode (list "sidecar" "edge")) }}
{{- fail (printf "mode must be sidecar or edge, not %q" $mode) }}
{{- end }}
{{- if not (has .Values.lifecycle.sleepAction (list "exec" "native")) }}
{{- fail (printf "lifecycle.sleepAction must be exec or native, not %q" .Values.lifecycle.sleepAction) }}
{{- end }}
{{- $ports := list (int .Values.strangler.port) (int .Values.strangler.adminPort) }}
{{- if .Values.tls.enabled }}
{{- $ports = append $ports (int .Values.tls.port) }}
{{- if not .Values.tls.secretName }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}
{{- if eq $mode "sidecar" }}
{{- if not .Values.app.image.repository }}
{{- fail "mode: sidecar needs app.image.repository (the legacy app strangler sits in front of)" }}
{{- end }}
{{- $ports = append $ports (int .Values.app.port) }}
{{- range .Values.app.extraPorts }}
{{- $ports = append $ports (int .containerPort) }}
{{- end }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "the containers of one pod share its network: ports must differ, got %v (strangler.port, strangler.adminPort, tls.port, app.port, app.extraPorts)" $ports) }}
{{- end }}
{{- if not .Values.config.existingConfigMap }}
{{- if not .Values.config.routes }}
{{- fail "config.routes is empty: strangler needs at least one route" }}
{{- end }}
{{- if and (eq $mode "edge") (not .Values.config.upstreams) }}
{{- fail "mode: edge needs config.upstreams (where the routes send requests)" }}
{{- end }}
{{- end }}
{{- if lt (include "strangler.drainSeconds" . | int) 0 }}
{{- fail "config.drainTimeoutSeconds must be 0 or more" }}
{{- end }}
{{- $needed := add (include "strangler.preStopSeconds" . | int) (include "strangler.drainSeconds" . | int) }}
{{- if le (include "strangler.graceSeconds" . | int) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%s) must be longer than strangler.preStopSleepSeconds + config.drainTimeoutSeconds (%d), or Kubernetes kills strangler before its drain ends" (include "strangler.graceSeconds" .) $needed) }}
{{- end }}
{{- if and .Values.ingress.backendTLS (not .Values.tls.enabled) }}
{{- fail "ingress.backendTLS needs tls.enabled" }}
{{- end }}
{{- end }}
