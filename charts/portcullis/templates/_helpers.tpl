{{/*
Names, labels and shared snippets. Object names are `<fullname>-<component>`; cluster-scoped
objects carry the fullname too, so two releases never share one.
*/}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portcullis
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects: (dict "ctx" $ "component" "gateway"). */}}
{{- define "portcullis.componentLabels" -}}
{{ include "portcullis.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "portcullis.operator.fullname" -}}
{{ include "portcullis.fullname" . }}-operator
{{- end }}

{{- define "portcullis.gateway.fullname" -}}
{{ include "portcullis.fullname" . }}-gateway
{{- end }}

{{- define "portcullis.operator.serviceAccountName" -}}
{{ include "portcullis.operator.fullname" . }}
{{- end }}

{{- define "portcullis.gateway.serviceAccountName" -}}
{{ include "portcullis.gateway.fullname" . }}
{{- end }}

{{/* The image reference of a component: (dict "ctx" $ "image" .Values.gateway.image). */}}
{{- define "portcullis.image" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Headless Service of the operator: every ready replica's address. */}}
{{- define "portcullis.operator.serviceName" -}}
{{ include "portcullis.operator.fullname" . }}
{{- end }}

{{/* DNS names the operator's serving certificate covers. */}}
{{- define "portcullis.operator.dnsNames" -}}
{{- $svc := include "portcullis.operator.serviceName" . }}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/* DNS names the gateway's serving certificate covers. */}}
{{- define "portcullis.gateway.dnsNames" -}}
{{- $svc := include "portcullis.gateway.fullname" . }}
{{- $names := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) }}
{{- if .Values.gateway.authHost }}
{{- $names = append $names .Values.gateway.authHost }}
{{- end }}
{{- concat $names .Values.gateway.tls.extraDnsNames | uniq | toJson }}
{{- end }}

{{- define "portcullis.operator.tlsSecretName" -}}
{{ include "portcullis.operator.fullname" . }}-tls
{{- end }}

{{- define "portcullis.gateway.tlsSecretName" -}}
{{- .Values.gateway.tls.existingSecret | default (printf "%s-tls" (include "portcullis.gateway.fullname" .)) }}
{{- end }}

{{- define "portcullis.signingKeySecretName" -}}
{{- .Values.gateway.signingKey.existingSecret | default (printf "%s-signing-key" (include "portcullis.gateway.fullname" .)) }}
{{- end }}

{{- define "portcullis.sessionKeySecretName" -}}
{{- .Values.gateway.sessionKey.existingSecret | default (printf "%s-session-key" (include "portcullis.gateway.fullname" .)) }}
{{- end }}

{{- define "portcullis.idpConfigMapName" -}}
{{ include "portcullis.fullname" . }}-identity-providers
{{- end }}

{{/* Where the gateway finds the client secret of identity provider `name`. */}}
{{- define "portcullis.idpSecretPath" -}}
/etc/portcullis/idp-secrets/{{ . }}/client-secret
{{- end }}

{{/* Pod security context of both components (restricted Pod Security Standard). */}}
{{- define "portcullis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context of both components. */}}
{{- define "portcullis.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Soft anti-affinity spreading a component's replicas over nodes: (dict "ctx" $ "component" "gateway"). */}}
{{- define "portcullis.defaultAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "portcullis.selectorLabels" . | nindent 12 }}
{{- end }}

{{/* Checks that fail early with a message saying what to set. */}}
{{- define "portcullis.validate" -}}
{{- if not .Values.gateway.authHost }}
{{- fail "gateway.authHost is required: the public name of the auth host, e.g. --set gateway.authHost=auth.example.com" }}
{{- end }}
{{- if not .Values.identityProviders }}
{{- fail "identityProviders needs at least one identity provider (see values.yaml and docs/install.md)" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name is required when tls.certManager.enabled" }}
{{- end }}
{{- /* After SIGTERM the operator needs up to 7 s (status flush 2 s, Lease release 2 s, drain 3 s). */}}
{{- if lt (int .Values.operator.terminationGracePeriodSeconds) (add (int .Values.operator.preStopSleepSeconds) 10 | int) }}
{{- fail "operator.terminationGracePeriodSeconds must be at least operator.preStopSleepSeconds + 10: the operator needs a few seconds after SIGTERM to flush status and release its Lease" }}
{{- end }}
{{- end }}

{{/*
Connection-limit flags of a component (gateway or operator), from its `connections` values.
*/}}
{{- define "portcullis.connectionArgs" -}}
- --tls-handshake-timeout={{ .tlsHandshakeTimeout }}
- --header-read-timeout={{ .headerReadTimeout }}
- --idle-timeout={{ .idleTimeout }}
- --max-request-head-bytes={{ int64 .maxRequestHeadBytes }}
- --max-connections-per-client={{ int64 .maxConnectionsPerClient }}
- --http2-keepalive-interval={{ .http2KeepaliveInterval }}
- --http2-keepalive-timeout={{ .http2KeepaliveTimeout }}
{{- end }}
