{{/*
Names, labels and the pieces every agentmeter pod shares. Kept here so a Service selector, a
ServiceMonitor selector and a pod template can never disagree.
*/}}

{{- define "agentmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentmeter.fullname" -}}
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

{{- define "agentmeter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: stable across upgrades (selectors are immutable). */}}
{{- define "agentmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentmeter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every resource; `component` may be empty for release-wide resources. */}}
{{- define "agentmeter.labels" -}}
helm.sh/chart: {{ include "agentmeter.chart" .root }}
app.kubernetes.io/name: {{ include "agentmeter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: agentmeter
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "agentmeter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentmeter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agentmeter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the configuration file and the policy file are mounted. */}}
{{- define "agentmeter.configDir" -}}/etc/agentmeter/config{{- end }}
{{- define "agentmeter.policyFile" -}}/etc/agentmeter/policy.yaml{{- end }}
{{- define "agentmeter.spoolDir" -}}/var/lib/agentmeter/spool{{- end }}

{{/* True ("true") when the exporter runs `coder sync` on a timer, and so calls Coder. */}}
{{- define "agentmeter.coderSyncs" -}}
{{- if and .Values.coder.url (gt (float64 .Values.coder.syncSeconds) 0.0) }}true{{ end }}
{{- end }}

{{/*
The CA bundle Coder's certificate chains to (coder.caBundle): "true" when one is set. It is
mounted in the pods that call Coder at coderCaDir/ca.crt, the path coder.ca_file names.
*/}}
{{- define "agentmeter.coderCaDir" -}}/etc/agentmeter/coder-ca{{- end }}
{{- define "agentmeter.coderCa" -}}
{{- $ca := .Values.coder.caBundle }}
{{- if and $ca.secretName $ca.configMapName }}
{{- fail "coder.caBundle: set secretName or configMapName, not both" }}
{{- end }}
{{- if or $ca.secretName $ca.configMapName }}
{{- if not .Values.coder.url }}
{{- fail "coder.caBundle needs coder.url (no pod calls Coder without it)" }}
{{- end }}true
{{- end }}
{{- end }}

{{/* The CA bundle's environment variable, volume mount and volume (only with coder.caBundle). */}}
{{- define "agentmeter.coderCaEnv" -}}
- name: AGENTMETER_CODER_CA_FILE
  value: {{ include "agentmeter.coderCaDir" . }}/ca.crt
{{- end }}
{{- define "agentmeter.coderCaMount" -}}
- name: coder-ca
  mountPath: {{ include "agentmeter.coderCaDir" . }}
  readOnly: true
{{- end }}
{{- define "agentmeter.coderCaVolume" -}}
{{- $ca := .Values.coder.caBundle -}}
- name: coder-ca
  {{- if $ca.secretName }}
  secret:
    secretName: {{ $ca.secretName }}
  {{- else }}
  configMap:
    name: {{ $ca.configMapName }}
  {{- end }}
    items:
      - key: {{ $ca.key }}
        path: ca.crt
{{- end }}

{{/* A Secret key as an environment variable; `optional` only where the value may be absent. */}}
{{- define "agentmeter.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.existingSecret }}
      key: {{ .ref.key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* Environment of every agentmeter container: the config file and the ledger. */}}
{{- define "agentmeter.commonEnv" -}}
- name: AGENTMETER_CONFIG
  value: {{ include "agentmeter.configDir" . }}/agentmeter.yaml
{{ include "agentmeter.secretEnv" (dict "name" "AGENTMETER_DATABASE_URL" "ref" .Values.database) }}
{{- with .Values.coder.url }}
- name: AGENTMETER_CODER_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}


{{/* The rendered configuration file; its checksum rolls the pods when it changes. */}}
{{- define "agentmeter.configFile" -}}
{{- if .Values.config }}{{ toYaml .Values.config }}{{ else }}{}{{ end }}
{{- end }}

{{- define "agentmeter.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/* One step of the migration Job: `root` is the chart context, `step` has name and args. */}}
{{- define "agentmeter.migrationContainer" -}}
- name: {{ .step.name }}
  image: {{ include "agentmeter.image" .root }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args:
    {{- toYaml .step.args | nindent 4 }}
  env:
    {{- include "agentmeter.commonEnv" .root | nindent 4 }}
    {{- /* The operator's extra variables come last: for a repeated name the last one wins. */}}
    {{- with .root.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml .root.Values.migration.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: {{ include "agentmeter.configDir" .root }}
      readOnly: true
    {{- if .step.policy }}
    - name: policy
      mountPath: {{ include "agentmeter.policyFile" .root }}
      subPath: {{ .root.Values.policy.key }}
      readOnly: true
    {{- end }}
    - name: tmp
      mountPath: /tmp
{{- end }}
