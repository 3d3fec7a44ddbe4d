{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a name.
*/}}
{{- define "agora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-scoped name: "<release>-agora", or just "<release>" when it already
contains the chart name (so `helm install agora ...` gives agora-user, agora-gateway).
*/}}
{{- define "agora.fullname" -}}
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

{{- define "agora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of one component's objects. Call with (dict "root" $ "name" "user").
*/}}
{{- define "agora.componentName" -}}
{{- printf "%s-%s" (include "agora.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries. Call with (dict "root" $ "name" "user").
*/}}
{{- define "agora.labels" -}}
helm.sh/chart: {{ include "agora.chart" .root }}
{{ include "agora.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: agora
{{- end }}

{{/*
Selector labels (immutable on a Deployment: never add to these).
*/}}
{{- define "agora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agora.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/*
One service's effective configuration as YAML: serviceDefaults with the
service's own entry merged over it. Use as
  {{- $svc := include "agora.serviceConfig" (dict "root" $ "name" $name) | fromYaml }}
*/}}
{{- define "agora.serviceConfig" -}}
{{- $own := index .root.Values.services .name | default dict }}
{{- $svc := mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $own) }}
{{- if not $svc.binary }}
{{- $_ := set $svc "binary" (printf "agora-%s" .name) }}
{{- end }}
{{- toYaml $svc }}
{{- end }}

{{/*
Upper-case env prefix of a service key: "user" -> "USER", "read-model" -> "READ_MODEL".
*/}}
{{- define "agora.envPrefix" -}}
{{- . | replace "-" "_" | upper }}
{{- end }}

{{/*
Container image. Call with (dict "root" $ "binary" "agora-user" "image" $svc.image).
*/}}
{{- define "agora.image" -}}
{{- $image := .image | default dict }}
{{- $repository := $image.repository | default (printf "%s/%s" .root.Values.image.repository .binary) }}
{{- $tag := $image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}

{{/*
Name of the Secret holding connection URLs.
*/}}
{{- define "agora.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "agora.fullname" .)) }}
{{- end }}

{{- define "agora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "agora.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/*
A container `env:` list. Call with
  (dict "root" $ "env" <map NAME: value> "secretEnv" <map NAME: secret key> "extraEnv" <list>)
Plain values with an empty string are skipped; a name in secretEnv wins over
the same name in env. Keys are emitted sorted, so renders are stable.
*/}}
{{- define "agora.envList" -}}
{{- $secretName := include "agora.secretName" .root }}
{{- range $k, $v := .env }}
{{- if and (ne (toString $v) "") (not (hasKey $.secretEnv $k)) }}
- name: {{ $k }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- range $k, $key := .secretEnv }}
- name: {{ $k }}
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ $key }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
