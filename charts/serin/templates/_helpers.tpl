{{/* The chart's name. */}}
{{- define "serin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, unless it lacks the chart's name. */}}
{{- define "serin.fullname" -}}
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

{{- define "serin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: serin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of the controller. */}}
{{- define "serin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of serin-sync. */}}
{{- define "serin.sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serin.name" . }}-sync
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "serin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "serin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "serin.sync.fullname" -}}
{{- printf "%s-sync" (include "serin.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "serin.sync.serviceAccountName" -}}
{{- default (include "serin.sync.fullname" .) .Values.sync.serviceAccount.name -}}
{{- end -}}

{{- define "serin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Leader election is on with more than one replica, or when asked for. */}}
{{- define "serin.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the alert webhook URLs. */}}
{{- define "serin.notificationsSecret" -}}
{{- printf "%s-notifications" (include "serin.fullname" .) -}}
{{- end -}}

{{- define "serin.hasNotificationSecrets" -}}
{{- if or .Values.slack.url .Values.slack.token .Values.msteams.url .Values.eventWebhook -}}true{{- end -}}
{{- end -}}
