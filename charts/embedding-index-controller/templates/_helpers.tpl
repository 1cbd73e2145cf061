{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "eic.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "eic.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eic.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "eic.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: embedding-index-controller
{{- end -}}

{{- define "eic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eic.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "eic.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches when it is not cluster-wide: the release namespace first. */}}
{{- define "eic.watchNamespaces" -}}
{{- $all := prepend .Values.watchNamespaces .Release.Namespace | uniq -}}
{{- join "," $all -}}
{{- end -}}

{{- define "eic.storeClaim" -}}
{{- default (printf "%s-store" (include "eic.fullname" .)) .Values.store.persistence.existingClaim -}}
{{- end -}}

{{/*
Least privilege: the operator reads and patches EmbeddingIndex objects (patch on the
main resource only for its finalizer and bookkeeping annotations), writes their status,
owns one routing ConfigMap per index, posts Events and, with leader election, holds a Lease.
Nothing else: no Secrets, no Pods, no CRD management.
*/}}
{{- define "eic.rules" -}}
- apiGroups: ["indexops.dev"]
  resources: ["embeddingindexes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["indexops.dev"]
  resources: ["embeddingindexes/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
{{- define "eic.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end -}}
