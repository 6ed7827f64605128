{{- define "videogen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "videogen.fullname" -}}
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

{{- /* Objects outside the release's namespace (ClusterRoles, their bindings, Roles in watched
       namespaces): unique per release and namespace, so that teams may install releases of the
       same name in their own namespaces. */}}
{{- define "videogen.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "videogen.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "videogen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "videogen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "videogen.labels" -}}
{{ include "videogen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "videogen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "videogen.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "videogen.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
