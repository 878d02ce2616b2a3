{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "paymesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: <release>-<chart>, or the release alone when it contains the chart name. */}}
{{- define "paymesh.fullname" -}}
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

{{- define "paymesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "paymesh.labels" -}}
helm.sh/chart: {{ include "paymesh.chart" . }}
{{ include "paymesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paymesh
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels selecting every pod of the release. */}}
{{- define "paymesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paymesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector labels of one component; args: dict "root" $ "name" <component>. */}}
{{- define "paymesh.componentLabels" -}}
{{ include "paymesh.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "paymesh.componentSelectorLabels" -}}
{{ include "paymesh.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* Deep merge that, unlike sprig's merge, lets false/0/"" override: dict "base" <map> "over" <map>. */}}
{{- define "paymesh.merge" -}}
{{- $out := deepCopy .base }}
{{- range $k, $v := .over }}
{{- $cur := get $out $k }}
{{- if and (kindIs "map" $v) (kindIs "map" $cur) }}
{{- $_ := set $out $k (include "paymesh.merge" (dict "base" $cur "over" $v) | fromYaml) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* One component's settings (components.default merged with components.<name>) as YAML; args: dict "root" $ "name" <component>. */}}
{{- define "paymesh.component" -}}
{{- $c := include "paymesh.merge" (dict "base" .root.Values.components.default "over" (index .root.Values.components .name)) | fromYaml }}
{{- if not $c.metricsPort }}
{{- $_ := set $c "metricsPort" (add $c.port 1000) }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Names of the components (every key of components but default), comma separated. */}}
{{- define "paymesh.componentNames" -}}
{{- without (keys .Values.components | sortAlpha) "default" | join "," }}
{{- end }}

{{- define "paymesh.componentFullname" -}}
{{- printf "%s-%s" (include "paymesh.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Env var prefix of a component: wallet -> WALLET_. */}}
{{- define "paymesh.envPrefix" -}}
{{- printf "%s_" (upper .) }}
{{- end }}

{{/* In-cluster DNS name of a component's Service; args: dict "root" $ "name" <component>. */}}
{{- define "paymesh.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "paymesh.componentFullname" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* In-cluster "host:port" of a component's gRPC Service; args: dict "root" $ "name" <component>. */}}
{{- define "paymesh.grpcAddress" -}}
{{- $c := include "paymesh.component" . | fromYaml }}
{{- printf "%s:%v" (include "paymesh.serviceHost" .) $c.port }}
{{- end }}

{{/* Envoy's upstream {host, port} for a component: envoy.upstreams.<name>, or its in-cluster Service. */}}
{{- define "paymesh.envoyUpstream" -}}
{{- $c := include "paymesh.component" . | fromYaml }}
{{- $u := index .root.Values.envoy.upstreams .name }}
host: {{ default (include "paymesh.serviceHost" .) $u.host }}
port: {{ default $c.port $u.port }}
{{- end }}

{{- define "paymesh.secretName" -}}
{{- default (include "paymesh.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "paymesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paymesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference; args: dict "image" <image values> "default" <tag>. */}}
{{- define "paymesh.image" -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
{{- end }}

{{/* A component's environment (Deployment and migration Job); args: dict "root" $ "name" <component>. */}}
{{- define "paymesh.componentEnv" -}}
{{- $root := .root }}
{{- $c := include "paymesh.component" . | fromYaml }}
{{- $p := include "paymesh.envPrefix" .name }}
- name: {{ $p }}GRPC_PORT
  value: {{ $c.port | quote }}
- name: {{ $p }}METRICS_PORT
  value: {{ $c.metricsPort | quote }}
- name: {{ $p }}KAFKA_BOOTSTRAP_SERVERS
  value: {{ $root.Values.kafka.bootstrapServers | quote }}
{{- /* Traces: the standard OpenTelemetry variables (paymesh_runtime.telemetry_export). */}}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s_svc" .name | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "paymesh.resourceAttributes" . | quote }}
{{- /* host.name: the pod's name, which is its host name. */}}
- name: OTEL_EXPERIMENTAL_RESOURCE_DETECTORS
  value: otel,host
{{- with $root.Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $root.Values.telemetry.otlpProtocol | quote }}
{{- with $root.Values.telemetry.otlpHeadersSecretKey }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ include "paymesh.secretName" $root }}
      key: {{ . }}
{{- end }}
{{- end }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $root.Values.telemetry.samplingRatio | quote }}
- name: {{ $p }}JWT_ISSUER
  value: {{ $root.Values.auth.jwtIssuer | quote }}
- name: {{ $p }}JWT_AUDIENCE
  value: {{ $root.Values.auth.jwtAudience | quote }}
{{- range $dep := $c.dependsOn }}
- name: {{ $p }}{{ upper $dep }}_ADDR
  value: {{ include "paymesh.grpcAddress" (dict "root" $root "name" $dep) | quote }}
{{- end }}
{{- range $k, $v := $c.env }}
- name: {{ $p }}{{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- range $k := $c.secretEnv }}
- name: {{ $p }}{{ $k }}
  valueFrom:
    secretKeyRef:
      name: {{ include "paymesh.secretName" $root }}
      key: {{ $p }}{{ $k }}
{{- end }}
{{- end }}

{{/* Checksum of the rendered Secret, so that changed secrets roll the pods. */}}
{{- define "paymesh.secretChecksum" -}}
{{- if .Values.secrets.create }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES of a component: the chart's, then telemetry.resourceAttributes; args: dict "root" $ "name" <component>. */}}
{{- define "paymesh.resourceAttributes" -}}
{{- $attrs := list "service.namespace=paymesh" (printf "k8s.namespace.name=%s" .root.Release.Namespace) }}
{{- range $k, $v := .root.Values.telemetry.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}
