{{/* Names: "kube-dlq" when the release is called kube-dlq, else "<release>-kube-dlq". */}}
{{- define "kube-dlq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kube-dlq.fullname" -}}
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

{{- define "kube-dlq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-dlq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The one subject every binding of the chart names: its ServiceAccount. */}}
{{- define "kube-dlq.subjects" }}
- kind: ServiceAccount
  name: {{ include "kube-dlq.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "kube-dlq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-dlq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-dlq.labels" -}}
{{ include "kube-dlq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "kube-dlq.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The namespaces of scope.namespaces, or nothing when the scope is every namespace. */}}
{{- define "kube-dlq.scopeNamespaces" -}}
{{- $ns := dig "scope" "namespaces" "all" .Values.config }}
{{- if kindIs "slice" $ns }}{{ join "," $ns }}{{ end }}
{{- end }}

{{- define "kube-dlq.signingDir" -}}/var/run/secrets/kube-dlq/signing{{- end }}
{{- define "kube-dlq.encryptionDir" -}}/var/run/secrets/kube-dlq/encryption{{- end }}

{{/* The config file: values.config, plus the keys the chart owns (where it mounts the keys). */}}
{{- define "kube-dlq.config" -}}
{{- $security := dict "signing_keys_dir" (include "kube-dlq.signingDir" .) "signing_key_id" .Values.secrets.signing.keyId }}
{{- if .Values.secrets.encryption.name }}
{{- $_ := set $security "encryption_keys_dir" (include "kube-dlq.encryptionDir" .) }}
{{- $_ := set $security "encryption_key_id" .Values.secrets.encryption.keyId }}
{{- end }}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "security" (mergeOverwrite (deepCopy (default (dict) $config.security)) $security) }}
{{- toYaml $config }}
{{- end }}

{{- define "kube-dlq.port" -}}
{{- dig "server" "port" 8080 .Values.config }}
{{- end }}

{{/* KUBE_DLQ_REDIS_URL: the bundled Redis, or the URL in the Secret (it may hold a password). */}}
{{- define "kube-dlq.redisEnv" -}}
- name: KUBE_DLQ_REDIS_URL
{{- if .Values.bundledRedis.enabled }}
  value: {{ printf "redis://%s-redis:6379/0" (include "kube-dlq.fullname" .) | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.redis.name }}
      key: {{ .Values.secrets.redis.key }}
{{- end }}
{{- end }}

{{/* The config and key volumes every kube-dlq pod mounts (daemon, sweep, consumer). */}}
{{- define "kube-dlq.volumeMounts" -}}
- name: config
  mountPath: /etc/kube-dlq
  readOnly: true
- name: signing
  mountPath: {{ include "kube-dlq.signingDir" . }}
  readOnly: true
{{- if .Values.secrets.encryption.name }}
- name: encryption
  mountPath: {{ include "kube-dlq.encryptionDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "kube-dlq.volumes" -}}
- name: config
  configMap:
    name: {{ include "kube-dlq.fullname" . }}
# A volume, not an API read: no RBAC on Secrets. Updated in place when the Secret changes,
# and kube-dlq re-reads it (a new key is used without a restart).
- name: signing
  secret:
    secretName: {{ .Values.secrets.signing.name }}
{{- if .Values.secrets.encryption.name }}
- name: encryption
  secret:
    secretName: {{ .Values.secrets.encryption.name }}
{{- end }}
{{- end }}

{{/* A component's own selector (sweep, consume, redis): never matched by the daemon's
Deployment, Service or PodDisruptionBudget. Call with (dict "ctx" $ "component" "sweep"). */}}
{{- define "kube-dlq.componentSelector" -}}
app.kubernetes.io/name: {{ include "kube-dlq.name" .ctx }}-{{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/part-of: {{ include "kube-dlq.name" .ctx }}
{{- end }}
