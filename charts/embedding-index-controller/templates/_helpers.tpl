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
With embeddingJobs, it also creates Jobs and CronJobs (and deletes a CronJob whose schedule was
removed). Nothing else: no Secrets, no Pods, no CRD management.
*/}}
{{- define "eic.rules" -}}
- apiGroups: ["indexops.dev"]
  resources: ["embeddingindexes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["indexops.dev"]
  resources: ["embeddingindexes/status"]
  verbs: ["get", "patch"]
{{- with .Values.rbac.routingConfigMapIndexes }}
# `create` cannot be limited by resourceNames (the name is not known before the object exists);
# it cannot overwrite an existing ConfigMap either (that is a 409).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames:
    {{- range . }}
    - {{ printf "%s-routing" . | quote }}
    {{- end }}
  verbs: ["get", "patch", "delete"]
{{- else }}
# Index names are not known at install time, so no resourceNames here: the operator patches and
# deletes only ConfigMaps labelled as its own and owned by the index (checked in code, uid precondition).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.embeddingJobs.enabled }}
# spec.reembed: one Indexed Job per (model, corpus) and a CronJob per scheduled index, owned by the index;
# the CronJob is deleted when its schedule is removed (only one labelled as the index's, uid precondition)
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create"]
{{- with .Values.rbac.routingConfigMapIndexes }}
# scoped like the routing ConfigMaps: `<index>-reembed` (the index name cut to 40 characters) of the listed
# indexes; `create` cannot be limited by resourceNames, and cannot overwrite an existing CronJob (409)
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["create"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  resourceNames:
    {{- range . }}
    - {{ printf "%s-reembed" (trunc 40 .) | quote }}
    {{- end }}
  verbs: ["get", "patch", "delete"]
{{- else }}
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- end }}
{{- end -}}
{{- define "eic.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "update"]
{{- end -}}
