{{- define "r2d.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "r2d.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "r2d.labels" -}}
{{ include "r2d.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "r2d.serviceAccountName" -}}
{{- default (include "r2d.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The namespaces the operator watches (when not cluster-wide), as a list. */}}
{{- define "r2d.namespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson .Values.watch.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* The label value marking this release's build containers on a node's Docker daemon. */}}
{{- define "r2d.instance" -}}
{{- printf "%s.%s" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "." | trimSuffix "-" -}}
{{- end }}

{{/* An address as the host part of a URL: IPv6 in brackets. */}}
{{- define "r2d.urlHost" -}}
{{- if contains ":" . -}}[{{ . }}]{{- else -}}{{ . }}{{- end -}}
{{- end }}

{{/* A number as an environment variable's value: whole numbers without an exponent (Helm reads
every number as a float64, and `quote` writes 2592000 as "2.592e+06", which no int parses). */}}
{{- define "r2d.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) -}}{{ int64 . | quote }}{{- else -}}{{ . | quote }}{{- end -}}
{{- end }}

{{/* Where the admission policies apply: the namespaces the operator watches (every one when cluster-wide). */}}
{{- define "r2d.policyNamespaces" -}}
{{- if not .Values.watch.allNamespaces }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values: {{ include "r2d.namespaces" . }}
{{- end }}
{{- end }}
