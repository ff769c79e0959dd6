{{/* The name of every object of the chart (cluster-scoped ones take it as a prefix). */}}
{{- define "rna.fullname" -}}
{{- default "rdma-node-agent" .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; the selector uses the first one only, so that it never changes. */}}
{{- define "rna.labels" -}}
app.kubernetes.io/name: {{ include "rna.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "rna.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rna.fullname" . }}
{{- end -}}

{{/* registry/repository:tag, or @digest; global.imageRegistryOverride replaces the registry.
     Arguments: (list $root $image $defaultTag). */}}
{{- define "rna.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $tag := index . 2 -}}
{{- $registry := default $image.registry $root.Values.global.imageRegistryOverride -}}
{{- $name := ternary (printf "%s/%s" $registry $image.repository) $image.repository (ne $registry "") -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $name $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name (default $tag $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Whether the agent manages the netns mode (then: NET_ADMIN and a writable /etc/modprobe.d). */}}
{{- define "rna.manages" -}}
{{- if ne .Values.agent.netnsMode "unmanaged" }}true{{ end -}}
{{- end -}}

{{/* The ConfigMap of the device plugin's config, "namespace/name", or "" when off. */}}
{{- define "rna.pluginConfigMap" -}}
{{- with .Values.devicePluginConfig.configMap -}}
{{- if .name }}{{ .namespace }}/{{ .name }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* The host directory of the reboot sentinel. */}}
{{- define "rna.sentinelDir" -}}
{{- dir .Values.rebootSentinel.path -}}
{{- end -}}

{{/* The scrape job of the alerts: the Service's name unless set. */}}
{{- define "rna.job" -}}
{{- default (include "rna.fullname" .) .Values.prometheusRule.job -}}
{{- end -}}
