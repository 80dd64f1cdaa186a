{{/* The chart name. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects: the release name, with the chart name unless it already holds it. */}}
{{- define "herald.fullname" -}}
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

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the chart renders for receiver URLs given in values. */}}
{{- define "herald.receiversSecretName" -}}
{{- printf "%s-receivers" (include "herald.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A receiver's secretRef, as a dict {name, key}, or an empty dict when the receiver is not set.
Arguments: (list $ <url> <existingSecret> <key in the chart's Secret> <value path for errors>
[<default key of the existing Secret>, "address" when not given])
*/}}
{{- define "herald.secretRef" -}}
{{- $root := index . 0 }}
{{- $url := index . 1 }}
{{- $existing := index . 2 }}
{{- $key := index . 3 }}
{{- $path := index . 4 }}
{{- $defaultKey := "address" }}
{{- if gt (len .) 5 }}{{ $defaultKey = index . 5 }}{{ end }}
{{- if and $url $existing.name }}
{{- fail (printf "set either %s or its existing Secret, not both" $path) }}
{{- end }}
{{- if $existing.name }}
{{- dict "name" $existing.name "key" (default $defaultKey $existing.key) | toJson }}
{{- else if $url }}
{{- dict "name" (include "herald.receiversSecretName" $root) "key" $key | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/* The Slack incoming webhook's secretRef (slack.url or slack.existingSecret). */}}
{{- define "herald.slackRef" -}}
{{- include "herald.secretRef" (list . .Values.slack.url .Values.slack.existingSecret "slack" "slack.url") }}
{{- end }}

{{/*
The Slack bot token's tokenSecretRef (slack.token or slack.existingTokenSecret), or an empty
dict. Fails when a webhook is set as well: the default policy has one Slack receiver.
*/}}
{{- define "herald.slackTokenRef" -}}
{{- $ref := include "herald.secretRef" (list . .Values.slack.token .Values.slack.existingTokenSecret "slackToken" "slack.token" "token") }}
{{- if and (ne $ref "{}") (or .Values.slack.url .Values.slack.existingSecret.name) }}
{{- fail "set either a Slack webhook (slack.url or slack.existingSecret) or a Slack bot token (slack.token or slack.existingTokenSecret), not both" }}
{{- end }}
{{- $ref }}
{{- end }}

{{- define "herald.msteamsRef" -}}
{{- include "herald.secretRef" (list . .Values.msteams.url .Values.msteams.existingSecret "msteams" "msteams.url") }}
{{- end }}

{{- define "herald.pagerdutyRef" -}}
{{- include "herald.secretRef" (list . .Values.pagerduty.routingKey .Values.pagerduty.existingSecret "pagerdutyRoutingKey" "pagerduty.routingKey" "routingKey") }}
{{- end }}

{{- define "herald.webhookRef" -}}
{{- include "herald.secretRef" (list . .Values.eventWebhook .Values.eventWebhookExistingSecret "webhook" "eventWebhook") }}
{{- end }}

{{/* The Secret holding the event token: the existing one, or the chart's. */}}
{{- define "herald.eventTokenSecretName" -}}
{{- if .Values.eventToken.existingSecret.name -}}
{{- .Values.eventToken.existingSecret.name -}}
{{- else -}}
{{- printf "%s-event-token" (include "herald.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "herald.eventTokenKey" -}}
{{- if .Values.eventToken.existingSecret.name -}}
{{- .Values.eventToken.existingSecret.key -}}
{{- else -}}
token
{{- end -}}
{{- end }}

{{/*
The Secret holding the key that signs gate links, or "" when there are no links (no
gates.externalURL): the existing one, or the chart's.
*/}}
{{- define "herald.gateLinkKeySecretName" -}}
{{- if .Values.gates.externalURL -}}
{{- if .Values.gates.linkKey.existingSecret.name -}}
{{- .Values.gates.linkKey.existingSecret.name -}}
{{- else -}}
{{- printf "%s-gate-link-key" (include "herald.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- else if .Values.gates.linkKey.existingSecret.name -}}
{{- fail "gates.linkKey.existingSecret signs links to gates.externalURL: set gates.externalURL too" -}}
{{- end -}}
{{- end }}

{{- define "herald.gateLinkKeyKey" -}}
{{- if .Values.gates.linkKey.existingSecret.name -}}
{{- .Values.gates.linkKey.existingSecret.key -}}
{{- else -}}
key
{{- end -}}
{{- end }}
