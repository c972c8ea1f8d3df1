{{/*
What the chart knows about each component: its binary, the name of its
resources, the client identity its certificate carries (the name the
allowlists use), its gRPC port (gateways serve none), and its variable
prefix. Everything else (NetworkPolicies, certificates, RBAC) is derived
from this one table so they cannot drift apart.
*/}}
{{- define "poz.components" -}}
store:
  suffix: store
  bin: poz-store
  envPrefix: POZ_STORE_
  identity: poz-store
  grpcPort: 50051
  dials: false
  needsRecord: false
verifier:
  suffix: verifier
  bin: poz-verifier
  envPrefix: POZ_VERIFIER_
  identity: poz-verifier
  grpcPort: 50052
  dials: false
  needsRecord: false
signer:
  suffix: signer
  bin: poz-signer
  envPrefix: POZ_SIGNER_
  identity: poz-signer
  grpcPort: 50053
  dials: false
  needsRecord: false
providerApi:
  suffix: provider-api
  bin: poz-provider-api
  envPrefix: POZ_PROVIDER_
  identity: poz-provider-api
  grpcPort: 50054
  dials: true
  needsRecord: true
queryGateway:
  suffix: query-gw
  bin: poz-query-gw
  envPrefix: POZ_QUERY_GW_
  identity: poz-query-gw
  grpcPort: 0
  dials: true
  needsRecord: true
submitGateway:
  suffix: submit-gw
  bin: poz-submit-gw
  envPrefix: POZ_SUBMIT_GW_
  identity: poz-submit-gw
  grpcPort: 0
  dials: true
  needsRecord: true
{{- end -}}

{{/* The components in a fixed order (dict keys are sorted anyway). */}}
{{- define "poz.componentKeys" -}}
store verifier signer providerApi queryGateway submitGateway
{{- end -}}

{{/* Whether a component is installed: those that need the provider's
record wait for provider.recordId. Call with (list $ key). */}}
{{- define "poz.enabled" -}}
{{- $root := index . 0 -}}
{{- $c := index (include "poz.components" $root | fromYaml) (index . 1) -}}
{{- if or (not $c.needsRecord) $root.Values.provider.recordId -}}true{{- end -}}
{{- end -}}

{{/* NAMEPREFIX-SUFFIX. Call with (list $ suffix). */}}
{{- define "poz.name" -}}
{{- printf "%s-%s" (index . 0).Values.namePrefix (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "poz.baseLabels" -}}
app.kubernetes.io/part-of: poz-fleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the release's objects that belong to no one component. */}}
{{- define "poz.commonLabels" -}}
{{ include "poz.baseLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component's pods. Call with (list $ suffix). */}}
{{- define "poz.selectorLabels" -}}
app.kubernetes.io/name: poz-fleet
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Labels of one component's objects. Call with (list $ suffix). */}}
{{- define "poz.labels" -}}
{{ include "poz.baseLabels" (index . 0) }}
{{ include "poz.selectorLabels" . }}
app.kubernetes.io/version: {{ (index . 0).Chart.AppVersion | quote }}
{{- end -}}

{{/* image: REPOSITORY:TAG of a component (its own image values over the
chart's). Call with (list $ componentValues). */}}
{{- define "poz.image" -}}
{{- $root := index . 0 -}}
{{- $img := merge (dict) ((index . 1).image | default dict) $root.Values.image -}}
{{- printf "%s:%s" $img.repository ($img.tag | default $root.Chart.AppVersion) -}}
{{- end -}}

{{- define "poz.pullPolicy" -}}
{{- $root := index . 0 -}}
{{- $img := merge (dict) ((index . 1).image | default dict) $root.Values.image -}}
{{- $img.pullPolicy -}}
{{- end -}}

{{/* The TLS Secret of a component. Call with (list $ key). */}}
{{- define "poz.tlsSecret" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $c := index (include "poz.components" $root | fromYaml) $key -}}
{{- $given := index $root.Values.tls.secrets $key -}}
{{- if and $given (not $root.Values.certManager.enabled) -}}{{ $given }}{{- else -}}{{ include "poz.name" (list $root (printf "%s-tls" $c.suffix)) }}{{- end -}}
{{- end -}}

{{/* The DNS names a server answers to, as the k8s:// balancer verifies
(SERVICE.NAMESPACE.svc) and as https:// dials them. Call with (list $
suffix). */}}
{{- define "poz.serverNames" -}}
{{- $root := index . 0 -}}
{{- $svc := include "poz.name" (list $root (index . 1)) -}}
{{- $ns := $root.Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.{{ $root.Values.clusterDomain }}
{{- end -}}

{{/* A peer's URL: k8s://SERVICE.NAMESPACE:PORT (EndpointSlice balancing)
or https://SERVICE:PORT; http:// without TLS. Call with (list $ key). */}}
{{- define "poz.peerUrl" -}}
{{- $root := index . 0 -}}
{{- $c := index (include "poz.components" $root | fromYaml) (index . 1) -}}
{{- $svc := include "poz.name" (list $root $c.suffix) -}}
{{- if $root.Values.discovery.kubernetes -}}
{{- printf "k8s://%s.%s:%d" $svc $root.Release.Namespace (int $c.grpcPort) -}}
{{- else if $root.Values.tls.enabled -}}
{{- printf "https://%s:%d" $svc (int $c.grpcPort) -}}
{{- else -}}
{{- printf "http://%s:%d" $svc (int $c.grpcPort) -}}
{{- end -}}
{{- end -}}

{{/* One TOML value from a values value: strings, numbers, booleans and
lists of them. JSON's string and array syntax is valid TOML. Integers
are printed without an exponent. */}}
{{- define "poz.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}{{ toJson $v }}
{{- else if kindIs "bool" $v -}}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) -}}
{{- if eq (float64 $v) (floor (float64 $v)) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if kindIs "slice" $v -}}[{{- range $i, $e := $v -}}{{- if $i }}, {{ end -}}{{ include "poz.tomlValue" $e }}{{- end -}}]
{{- else -}}{{ fail (printf "config value %v: only strings, numbers, booleans and lists of them" $v) }}
{{- end -}}
{{- end -}}

{{/* The settings every service shares (docs/OPERATIONS.md, "Every
service"): log_json, metrics_listen, and [tls] or insecure. [allow] comes
last, as a table. Call with (list $ key). */}}
{{- define "poz.serveSettings" -}}
{{- $root := index . 0 -}}
log_json = {{ $root.Values.logJson }}
metrics_listen = "0.0.0.0:{{ int $root.Values.metrics.port }}"
{{- if has (index . 1) (list "store" "verifier" "signer" "providerApi") }}
# After SIGTERM: /readyz 503 and health NOT_SERVING while the port still
# accepts, so the Service's endpoints drop the pod before it closes (the
# gateways get the same from their preStop sleep).
drain_delay_ms = {{ int $root.Values.grpcDrainDelayMs }}
{{- end }}
{{- if not $root.Values.tls.enabled }}
# Trials only: no TLS, so no caller has a name and no allowlist is enforced.
insecure = true
{{- end }}
{{- end -}}

{{- define "poz.tlsTable" -}}
{{- if .Values.tls.enabled }}
[tls]
cert_file = "/tls/tls.crt"
key_file = "/tls/tls.key"
ca_file = "/tls/ca.crt"
{{- end }}
{{- end -}}

{{/* The [allow] table of a gRPC service, rendered only with TLS (the
services refuse [allow] with insecure). Call with (list $ key). */}}
{{- define "poz.allowTable" -}}
{{- $root := index . 0 -}}
{{- $allow := (index $root.Values (index . 1)).allow -}}
{{- if and $root.Values.tls.enabled $allow }}
[allow]
{{- range $rpc := keys $allow | sortAlpha }}
{{- $ids := index $allow $rpc }}
{{- if $ids }}
{{ toJson $rpc }} = {{ include "poz.tomlValue" $ids }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A component's own settings from values (`config`), one line each. */}}
{{- define "poz.userConfig" -}}
{{- range $k := keys . | sortAlpha }}
{{- $v := index $ $k }}
{{- if not (kindIs "invalid" $v) }}
{{ $k }} = {{ include "poz.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Who may reach each gRPC port, from the allowlists: for every server
component, the fleet components whose identity is on any of its lists
(`fleet`) and the other identities (`external`, carried by
networkPolicy.peers). A name on a list that is neither stops the
render: nobody could reach the port with it. */}}
{{- define "poz.grpcGraph" -}}
{{- $root := . -}}
{{- $comps := include "poz.components" $root | fromYaml -}}
{{- $byIdentity := dict -}}
{{- range $k, $c := $comps }}{{ $_ := set $byIdentity $c.identity $k }}{{ end -}}
{{- range $k, $c := $comps }}
{{- if $c.grpcPort }}
{{ $k }}:
  fleet:
{{- $ids := list -}}
{{- range $rpc, $list := (index $root.Values $k).allow }}{{ range $list }}{{ $ids = append $ids . }}{{ end }}{{ end }}
{{- $ids = $ids | uniq | sortAlpha }}
{{- range $ids }}
{{- $from := index $byIdentity . }}
{{- if and $from (include "poz.enabled" (list $root $from)) }}
    - {{ $from }}
{{- end }}
{{- end }}
  external:
{{- range $ids }}
{{- if not (hasKey $byIdentity .) }}
{{- if not (hasKey $root.Values.networkPolicy.peers .) }}
{{- fail (printf "%s.allow names %q, which is no fleet component: say which pods carry that certificate in networkPolicy.peers.%s" $k . .) }}
{{- end }}
    - {{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Env every fleet pod gets: its name and namespace (the EndpointSlice
watches and the store's leases use them) and the trace exporter. */}}
{{- define "poz.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
{{- end }}
{{- end -}}

{{- define "poz.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "poz.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The database Secret (name and key): the in-chart one for trials, else
the operator's. */}}
{{- define "poz.dbSecretName" -}}
{{- if .Values.postgresql.enabled -}}{{ include "poz.name" (list . "postgresql") }}{{- else -}}{{ .Values.database.existingSecret }}{{- end -}}
{{- end -}}
{{- define "poz.dbSecretKey" -}}
{{- if .Values.postgresql.enabled -}}url{{- else -}}{{ .Values.database.secretKey }}{{- end -}}
{{- end -}}

{{/* NetworkPolicy `to` peers of the database. */}}
{{- define "poz.dbPeers" -}}
{{- if .Values.postgresql.enabled }}
- podSelector:
    matchLabels:
      {{- include "poz.selectorLabels" (list . "postgresql") | nindent 6 }}
{{- else if .Values.database.networkPolicyTo }}
{{- toYaml .Values.database.networkPolicyTo }}
{{- end }}
{{- end -}}
