{{/*
Helpers of the ImageSwap chart. Object names are fixed (the original
ImageSwap's, as in deploy/manifests), not derived from the release name, so
that `helm upgrade --install` over an existing installation updates the same
objects. Labels are the kustomize base's: `app: imageswap` and
`resource: <kind>`.
*/}}

{{/* Labels of an object: imageswap.labels (list $ "deployment") */}}
{{- define "imageswap.labels" -}}
app: imageswap
resource: {{ index . 1 }}
{{- end }}

{{/* The image of both containers. */}}
{{- define "imageswap.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/*
The programs' defaults (docs/configuration.md), for a setting that
.Values.config leaves out (null): the chart derives objects from them.
*/}}
{{- define "imageswap.programDefaults" -}}
IMAGESWAP_LISTEN: "0.0.0.0:5000"
IMAGESWAP_TLS_CERT: "/tls/cert.pem"
IMAGESWAP_TLS_KEY: "/tls/key.pem"
IMAGESWAP_MAPS_FILE: "/app/maps/imageswap-maps.conf"
IMAGESWAP_DISABLE_LABEL: "k8s.twr.io/imageswap"
IMAGESWAP_REQUEST_TIMEOUT: "2s"
IMAGESWAP_SHUTDOWN_GRACE: "20s"
IMAGESWAP_SERVICE_NAME: "imageswap"
IMAGESWAP_TLS_SECRET_NAME: "imageswap-tls"
IMAGESWAP_TLS_CA_SECRET_NAME: "imageswap-tls-ca"
IMAGESWAP_MWC_NAME: "imageswap-webhook"
IMAGESWAP_WEBHOOK_NAME: "imageswap.webhook.k8s.twr.io"
IMAGESWAP_MWC_TEMPLATE: "/mwc/imageswap-mwc.yaml"
IMAGESWAP_TLS_DIR: "/tls"
IMAGESWAP_CSR_SIGNER_NAME: "kubernetes.io/kubelet-serving"
IMAGESWAP_DISABLE_AUTO_MWC: "FALSE"
{{- end }}

{{/*
The certificate source init runs with, lower case: the setting, else the
program's default (self-signed; csr with IMAGESWAP_DISABLE_AUTO_MWC). The
RBAC templates grant what it needs (docs/operations.md, "Rights per
certificate source").
*/}}
{{- define "imageswap.certSource" -}}
{{- $source := index .Values.config "IMAGESWAP_CERT_SOURCE" -}}
{{- if $source -}}
{{ lower $source }}
{{- else if include "imageswap.autoMwcDisabled" . -}}
csr
{{- else -}}
self-signed
{{- end -}}
{{- end }}

{{/* One setting's effective value: imageswap.setting (list $ "IMAGESWAP_LISTEN") */}}
{{- define "imageswap.setting" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $value := index $root.Values.config $name -}}
{{- if kindIs "invalid" $value -}}
{{- $value = index (include "imageswap.programDefaults" $root | fromYaml) $name -}}
{{- end -}}
{{- if not (kindIs "invalid" $value) }}{{ $value }}{{ end -}}
{{- end }}

{{/* The variables of the ConfigMap imageswap-env, as a YAML map of strings. */}}
{{- define "imageswap.envData" -}}
{{- $data := dict -}}
{{- range $name, $value := merge (deepCopy (.Values.extraConfig | default dict)) .Values.config -}}
{{- if not (kindIs "invalid" $value) -}}
{{- /* Values from --set or JSON arrive as float64: 4194304, not 4.194304e+06. */ -}}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) -}}
{{- $value = int64 $value -}}
{{- end -}}
{{- $_ := set $data $name (toString $value) -}}
{{- end -}}
{{- end -}}
{{- if .Values.webhook.createByHelm -}}
{{- $_ := set $data "IMAGESWAP_DISABLE_AUTO_MWC" "TRUE" -}}
{{- end -}}
{{- /* No preStop `sleep` action without the native sidecar (clusters before
1.30): the server keeps accepting this long after SIGTERM instead. */ -}}
{{- if and (not .Values.nativeSidecar) .Values.preStopSleepSeconds (not (hasKey $data "IMAGESWAP_SHUTDOWN_DELAY")) -}}
{{- $_ := set $data "IMAGESWAP_SHUTDOWN_DELAY" (printf "%ds" (int .Values.preStopSleepSeconds)) -}}
{{- end -}}
{{- /* Mirror verification and pull secrets (docs/verify.md), from `verify`:
every setting written out, as the kustomize base does. */ -}}
{{- with .Values.verify -}}
{{- $_ := set $data "IMAGESWAP_VERIFY" (ternary "on" "off" .enabled) -}}
{{- $_ := set $data "IMAGESWAP_VERIFY_ON_ERROR" (toString .onError) -}}
{{- $_ := set $data "IMAGESWAP_VERIFY_TIMEOUT" (toString .timeout) -}}
{{- $_ := set $data "IMAGESWAP_VERIFY_TTL" (toString .ttl) -}}
{{- $_ := set $data "IMAGESWAP_VERIFY_MISSING_TTL" (toString .missingTtl) -}}
{{- $_ := set $data "IMAGESWAP_VERIFY_STALE_IF_ERROR" (toString .staleIfError) -}}
{{- $_ := set $data "IMAGESWAP_REGISTRY_CONFIG" "/etc/imageswap/registry/.dockerconfigjson" -}}
{{- if include "imageswap.registryCaConfigMap" $ -}}
{{- $_ := set $data "IMAGESWAP_REGISTRY_CA" (printf "/etc/imageswap/registry-ca/%s" .registryCa.key) -}}
{{- end -}}
{{- with .platforms }}{{ $_ := set $data "IMAGESWAP_VERIFY_PLATFORMS" (join "," .) }}{{ end -}}
{{- with .plainHttp }}{{ $_ := set $data "IMAGESWAP_REGISTRY_PLAIN_HTTP" (join "," .) }}{{ end -}}
{{- with .imagePullSecrets -}}
{{- $pairs := list -}}
{{- range $registry, $secret := . }}{{ $pairs = append $pairs (printf "%s=%s" $registry $secret) }}{{ end -}}
{{- $_ := set $data "IMAGESWAP_IMAGE_PULL_SECRETS" (join "," $pairs) -}}
{{- end -}}
{{- end -}}
{{- /* The server refuses a request timeout not below the webhook's
timeoutSeconds: it reads that from here, so the two cannot disagree. */ -}}
{{- $_ := set $data "IMAGESWAP_WEBHOOK_TIMEOUT" (printf "%ds" (int .Values.webhook.timeoutSeconds)) -}}
{{- toYaml $data -}}
{{- end }}

{{/* The ConfigMap of the registry CA bundle: the user's, the chart's, or none (empty). */}}
{{- define "imageswap.registryCaConfigMap" -}}
{{- with .Values.verify.registryCa -}}
{{- if .existingConfigMap -}}
{{ .existingConfigMap }}
{{- else if .pem -}}
imageswap-registry-ca
{{- end -}}
{{- end -}}
{{- end }}

{{/* The port of an address such as 0.0.0.0:5000 or [::]:5000. */}}
{{- define "imageswap.port" -}}
{{- regexReplaceAll "^.*:" . "" -}}
{{- end }}

{{/* true when init leaves the webhook configuration alone. */}}
{{- define "imageswap.autoMwcDisabled" -}}
{{- if or .Values.webhook.createByHelm (eq (lower (include "imageswap.setting" (list . "IMAGESWAP_DISABLE_AUTO_MWC"))) "true") -}}
true
{{- end -}}
{{- end }}

{{/* Seconds of a duration written with one unit (20s, 500ms, 1m, 2h); empty otherwise. */}}
{{- define "imageswap.seconds" -}}
{{- $m := regexFindAll "^([0-9]+)(ms|s|m|h)$" . 1 -}}
{{- if $m -}}
{{- $n := regexReplaceAll "[a-z]+$" . "" | float64 -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $factor := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0) $unit -}}
{{- mulf $n $factor -}}
{{- end -}}
{{- end }}

{{/*
webhook.namespaceSelector with kube-system and the release namespace always
excluded (a `kubernetes.io/metadata.name NotIn` expression, added, or merged
into the operator's own NotIn on that key), whatever selector the operator
sets, an opt-out one included: the webhook never gates the control plane's
add-ons or its own restart.
*/}}
{{- define "imageswap.namespaceSelector" -}}
{{- $selector := deepCopy (.Values.webhook.namespaceSelector | default dict) -}}
{{- $excluded := list "kube-system" .Release.Namespace -}}
{{- $expressions := list -}}
{{- $merged := false -}}
{{- range (get $selector "matchExpressions" | default list) -}}
{{- if and (not $merged) (eq .key "kubernetes.io/metadata.name") (eq .operator "NotIn") -}}
{{- $expressions = append $expressions (dict "key" .key "operator" "NotIn" "values" (concat .values $excluded | uniq)) -}}
{{- $merged = true -}}
{{- else -}}
{{- $expressions = append $expressions . -}}
{{- end -}}
{{- end -}}
{{- if not $merged -}}
{{- $expressions = append $expressions (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded) -}}
{{- end -}}
{{- $_ := set $selector "matchExpressions" $expressions -}}
{{- if kindIs "invalid" $selector.matchLabels -}}
{{- $_ := unset $selector "matchLabels" -}}
{{- end -}}
{{- toYaml $selector -}}
{{- end }}

{{/*
The MutatingWebhookConfiguration: the template init fills in, or (with
webhook.createByHelm) the object Helm creates, caBundle included.
imageswap.webhookConfiguration (dict "root" $ "caBundle" "...")
*/}}
{{- define "imageswap.webhookConfiguration" -}}
{{- $root := .root -}}
{{- $v := $root.Values.webhook -}}
{{- $disableLabel := include "imageswap.setting" (list $root "IMAGESWAP_DISABLE_LABEL") -}}
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ include "imageswap.setting" (list $root "IMAGESWAP_MWC_NAME") }}
  labels:
    {{- include "imageswap.labels" (list $root "mutatingwebhookconfiguration") | nindent 4 }}
webhooks:
  - name: {{ include "imageswap.setting" (list $root "IMAGESWAP_WEBHOOK_NAME") }}
    clientConfig:
      service:
        name: {{ include "imageswap.setting" (list $root "IMAGESWAP_SERVICE_NAME") }}
        namespace: {{ $root.Release.Namespace }}
        path: "/"
        port: {{ $v.servicePort }}
      {{- with .caBundle }}
      caBundle: {{ . }}
      {{- end }}
    rules:
      {{- toYaml $v.rules | nindent 6 }}
    namespaceSelector:
      {{- include "imageswap.namespaceSelector" $root | nindent 6 }}
    objectSelector:
      {{- if kindIs "invalid" $v.objectSelector }}
      matchExpressions:
        - key: {{ $disableLabel }}
          operator: NotIn
          values: ["disabled"]
      {{- else }}
      {{- toYaml $v.objectSelector | nindent 6 }}
      {{- end }}
    failurePolicy: {{ $v.failurePolicy }}
    matchPolicy: {{ $v.matchPolicy }}
    sideEffects: None
    admissionReviewVersions: ["v1"]
    reinvocationPolicy: {{ $v.reinvocationPolicy }}
    timeoutSeconds: {{ $v.timeoutSeconds }}
    {{- with concat ($v.matchConditions | default list) (include "imageswap.excludeConditions" $root | fromYamlArray) }}
    matchConditions:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}

{{/*
webhook.excludeSelectors as matchConditions, a YAML list: one condition per
entry, named `exclude-NAME`, false (the pod is not sent) when the object's
labels match the entry's selector with Kubernetes' label-selector semantics
(matchLabels and every matchExpression, ANDed; NotIn and DoesNotExist also
match a pod without labels). The API server ANDs the conditions, so a pod is
sent only when it matches none of the entries. CEL reads the labels behind
has() only (an erroring condition would reject the pod with failurePolicy
Fail); keys and values are restricted by values.schema.json to the label
syntax, so single quotes need no escaping.
*/}}
{{- define "imageswap.excludeConditions" -}}
{{- $conditions := list -}}
{{- range .Values.webhook.excludeSelectors -}}
{{- $terms := list -}}
{{- $matchesNoLabels := true -}}
{{- range $key, $value := (.matchLabels | default dict) -}}
{{- $terms = append $terms (printf "(%s in object.metadata.labels && object.metadata.labels[%s] == %s)" (squote $key) (squote $key) (squote $value)) -}}
{{- $matchesNoLabels = false -}}
{{- end -}}
{{- range (.matchExpressions | default list) -}}
{{- $key := squote .key -}}
{{- $values := list -}}
{{- range (.values | default list) }}{{ $values = append $values (squote .) }}{{ end -}}
{{- $in := printf "object.metadata.labels[%s] in [%s]" $key (join ", " $values) -}}
{{- if eq .operator "In" -}}
{{- $terms = append $terms (printf "(%s in object.metadata.labels && %s)" $key $in) -}}
{{- $matchesNoLabels = false -}}
{{- else if eq .operator "NotIn" -}}
{{- $terms = append $terms (printf "(!(%s in object.metadata.labels) || !(%s))" $key $in) -}}
{{- else if eq .operator "Exists" -}}
{{- $terms = append $terms (printf "%s in object.metadata.labels" $key) -}}
{{- $matchesNoLabels = false -}}
{{- else -}}
{{- $terms = append $terms (printf "!(%s in object.metadata.labels)" $key) -}}
{{- end -}}
{{- end -}}
{{- $expression := printf "!(object != null && has(object.metadata) && (has(object.metadata.labels) ? (%s) : %t))" (join " && " $terms) $matchesNoLabels -}}
{{- $conditions = append $conditions (dict "name" (printf "exclude-%s" .name) "expression" $expression) -}}
{{- end -}}
{{- toYaml $conditions -}}
{{- end }}

{{/*
The container running `imageswap init`: dict "root" $ "name" … "watch" bool
"native" bool. watch: `init --watch` (the sidecar); native: as an init
container with restartPolicy Always.
*/}}
{{- define "imageswap.initContainer" -}}
{{- $root := .root -}}
{{- $watchListen := index $root.Values.config "IMAGESWAP_WATCH_LISTEN" -}}
- name: {{ .name }}
  image: {{ include "imageswap.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  command: ["/usr/local/bin/imageswap"]
  {{- if .watch }}
  args: ["init", "--watch"]
  {{- with $watchListen }}
  ports:
    # IMAGESWAP_WATCH_LISTEN: /metrics, /healthz, /readyz of the sidecar.
    - name: watch
      containerPort: {{ include "imageswap.port" . }}
      protocol: TCP
  {{- end }}
  {{- else }}
  args: ["init"]
  {{- end }}
  env:
    - name: IMAGESWAP_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: IMAGESWAP_NAMESPACE_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- with $root.Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  envFrom:
    - configMapRef:
        name: imageswap-env
  {{- if and .watch $watchListen }}
  {{- if .native }}
  # 503 until the first pass wrote the pair (the CSR may take up to
  # IMAGESWAP_CSR_TIMEOUT); the server starts only after it passes.
  startupProbe:
    httpGet:
      path: /readyz
      port: watch
    periodSeconds: 1
    timeoutSeconds: 2
    failureThreshold: 120
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: watch
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
  {{- end }}
  resources:
    {{- toYaml $root.Values.initResources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: imageswap-tls
      mountPath: {{ include "imageswap.setting" (list $root "IMAGESWAP_TLS_DIR") }}
    - name: imageswap-mwc
      mountPath: {{ dir (include "imageswap.setting" (list $root "IMAGESWAP_MWC_TEMPLATE")) }}
      readOnly: true
    # The maps: the webhook's generated matchConditions follow them.
    - name: imageswap-maps
      mountPath: {{ dir (include "imageswap.setting" (list $root "IMAGESWAP_MAPS_FILE")) }}
      readOnly: true
    - name: imageswap-init-token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
{{- end }}
