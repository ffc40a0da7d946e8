{{/* Name of the release's objects: the release name, with "-flotilla" unless it already says so. */}}
{{- define "flotilla.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one component (brain or edge). */}}
{{- define "flotilla.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects. */}}
{{- define "flotilla.labels" -}}
{{ include "flotilla.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The brains need a ServiceAccount: Kubernetes discovery or a Lease for the election. */}}
{{- define "flotilla.brainAccount" -}}
{{- if or .Values.kubernetesDiscovery.enabled (eq .Values.brain.election "kubernetes") }}true{{ end -}}
{{- end -}}

{{- define "flotilla.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Pod and container security: non-root, read-only, no privilege, no capabilities. */}}
{{- define "flotilla.podSecurity" -}}
securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
{{- end -}}
{{- define "flotilla.containerSecurity" -}}
securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
{{- end -}}

{{/* The brain's config file (docs/operations.md): what the chart sets, then brain.config over it. */}}
{{- define "flotilla.brainConfig" -}}
{{- $c := dict
  "server" (dict "restAddr" "0.0.0.0:8080" "grpcApiAddr" "0.0.0.0:18001")
  "nats" (dict "url" .Values.nats.url "bucket" .Values.nats.bucket "embeddedEdge" false)
  "observability" (dict "level" .Values.logging.level "format" .Values.logging.format)
  "ha" (dict "enabled" (gt (int .Values.brain.replicas) 1))
-}}
{{- if eq .Values.brain.election "kubernetes" }}{{ $_ := set $c.ha "leaseKubernetes" (printf "in-cluster@%s/%s-leader" .Release.Namespace (include "flotilla.fullname" .)) }}{{ end -}}
{{- if .Values.logging.otlpEndpoint }}{{ $_ := set $c.observability "otlpEndpoint" .Values.logging.otlpEndpoint }}{{ end -}}
{{- if .Values.nats.credsSecret }}{{ $_ := set $c.nats "creds" "/etc/flotilla/nats/nats.creds" }}{{ end -}}
{{- $sec := dict -}}
{{- if .Values.brain.tlsSecret -}}
{{- $_ := set $sec "tlsCert" "/etc/flotilla/tls/tls.crt" -}}
{{- $_ := set $sec "tlsKey" "/etc/flotilla/tls/tls.key" -}}
{{- $_ := set $sec "clientCa" "/etc/flotilla/tls/ca.crt" -}}
{{- end -}}
{{- with .Values.brain.auth -}}
{{- if .jwksSecret }}{{ $_ := set $sec "authJwks" "/etc/flotilla/jwks/jwks.json" }}{{ else if .jwksUrl }}{{ $_ := set $sec "authJwks" .jwksUrl }}{{ end -}}
{{- if .issuer }}{{ $_ := set $sec "authIssuer" .issuer }}{{ end -}}
{{- if .audience }}{{ $_ := set $sec "authAudience" .audience }}{{ end -}}
{{- if .rbacPolicyConfigMap }}{{ $_ := set $sec "rbacPolicy" "/etc/flotilla/rbac/rbac.yaml" }}{{ end -}}
{{- end -}}
{{- if $sec }}{{ $_ := set $c "security" $sec }}{{ end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.brain.config)) -}}
{{- end -}}

{{/* The secrets key's environment (brain and edge, when secretsKey.secretName is set): the key file, and the previous one while rotating. */}}
{{- define "flotilla.secretsKeyEnv" -}}
- {name: FLOTILLA_SECRETS_KEY_FILE, value: /etc/flotilla/secrets-key/key}
{{- if .Values.secretsKey.rotating }}
- {name: FLOTILLA_SECRETS_OLD_KEY_FILE, value: /etc/flotilla/secrets-key/old-key}
{{- end }}
{{- end }}
