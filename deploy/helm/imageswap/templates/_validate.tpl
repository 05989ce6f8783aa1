{{/*
Checks across values that values.schema.json cannot express; each stops the
render with one line naming the values. Included by the Deployment.
*/}}
{{- define "imageswap.validate" -}}
{{- $tlsDir := include "imageswap.setting" (list . "IMAGESWAP_TLS_DIR") | trimSuffix "/" -}}
{{- range $var := list "IMAGESWAP_TLS_CERT" "IMAGESWAP_TLS_KEY" -}}
{{- $path := include "imageswap.setting" (list $ $var) -}}
{{- if ne (dir $path) $tlsDir -}}
{{- fail (printf "config.%s (%s) must be a file in config.IMAGESWAP_TLS_DIR (%s): the init container writes the pair there" $var $path $tlsDir) -}}
{{- end -}}
{{- end -}}
{{- $requestTimeout := include "imageswap.seconds" (include "imageswap.setting" (list . "IMAGESWAP_REQUEST_TIMEOUT")) -}}
{{- if and $requestTimeout (ge (float64 $requestTimeout) (float64 .Values.webhook.timeoutSeconds)) -}}
{{- fail (printf "webhook.timeoutSeconds (%v) must exceed config.IMAGESWAP_REQUEST_TIMEOUT (%s), so the server's 503 arrives first" .Values.webhook.timeoutSeconds (include "imageswap.setting" (list . "IMAGESWAP_REQUEST_TIMEOUT"))) -}}
{{- end -}}
{{- $grace := include "imageswap.seconds" (include "imageswap.setting" (list . "IMAGESWAP_SHUTDOWN_GRACE")) -}}
{{- if and $grace (le (float64 .Values.terminationGracePeriodSeconds) (addf (float64 $grace) (float64 .Values.preStopSleepSeconds))) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.IMAGESWAP_SHUTDOWN_GRACE (%s) plus preStopSleepSeconds (%v)" .Values.terminationGracePeriodSeconds (include "imageswap.setting" (list . "IMAGESWAP_SHUTDOWN_GRACE")) .Values.preStopSleepSeconds) -}}
{{- end -}}
{{- $listenPort := include "imageswap.port" (include "imageswap.setting" (list . "IMAGESWAP_LISTEN")) -}}
{{- with (index .Values.config "IMAGESWAP_METRICS_LISTEN") -}}
{{- if eq (include "imageswap.port" .) $listenPort -}}
{{- fail (printf "config.IMAGESWAP_METRICS_LISTEN (%s) must use another port than config.IMAGESWAP_LISTEN" .) -}}
{{- end -}}
{{- end -}}
{{- with (index .Values.config "IMAGESWAP_WATCH_LISTEN") -}}
{{- $watchPort := include "imageswap.port" . -}}
{{- if or (eq $watchPort $listenPort) (eq $watchPort (include "imageswap.port" (index $.Values.config "IMAGESWAP_METRICS_LISTEN" | default ""))) -}}
{{- fail (printf "config.IMAGESWAP_WATCH_LISTEN (%s) must use another port than config.IMAGESWAP_LISTEN and config.IMAGESWAP_METRICS_LISTEN: the sidecar shares the pod's network" .) -}}
{{- end -}}
{{- end -}}
{{- $selector := .Values.webhook.namespaceSelector | default dict -}}
{{- if not (or $selector.matchLabels $selector.matchExpressions) -}}
{{- fail "webhook.namespaceSelector must select namespaces (matchLabels or matchExpressions): an empty one sends every namespace's pods, ImageSwap's own included, to ImageSwap" -}}
{{- end -}}
{{- $disableLabel := include "imageswap.setting" (list . "IMAGESWAP_DISABLE_LABEL") -}}
{{- if hasKey (.Values.podLabels | default dict) $disableLabel -}}
{{- fail (printf "podLabels must not set %s (config.IMAGESWAP_DISABLE_LABEL): ImageSwap's own pods always carry it as `disabled`, so the webhook never gates its own restart" $disableLabel) -}}
{{- end -}}
{{- /* The API server allows 64 matchConditions per webhook; init adds up to 3 generated ones. */ -}}
{{- $conditionCount := add (len (.Values.webhook.matchConditions | default list)) (len (.Values.webhook.excludeSelectors | default list)) -}}
{{- if gt (int $conditionCount) 61 -}}
{{- fail (printf "webhook.matchConditions and webhook.excludeSelectors make %d matchConditions; the API server allows 64 per webhook, and imageswap init adds up to 3: at most 61" (int $conditionCount)) -}}
{{- end -}}
{{- $names := list -}}
{{- range (.Values.webhook.matchConditions | default list) }}{{ $names = append $names .name }}{{ end -}}
{{- range .Values.webhook.excludeSelectors -}}
{{- if has (printf "exclude-%s" .name) $names -}}
{{- fail (printf "webhook.excludeSelectors: the name %q is used twice (its condition is exclude-%s, which must be unique among webhook.matchConditions and the other entries)" .name .name) -}}
{{- end -}}
{{- $names = append $names (printf "exclude-%s" .name) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (kindIs "invalid" .Values.replicas)) -}}
{{- fail (printf "replicas (%v) is not used while autoscaling.enabled is true (the HPA owns the count): set autoscaling.minReplicas instead, or autoscaling.enabled=false" .Values.replicas) -}}
{{- end -}}
{{- if and .Values.maps.existingConfigMap (not (kindIs "invalid" .Values.maps.content)) -}}
{{- fail (printf "maps.content is not used with maps.existingConfigMap (%s): the pods read that ConfigMap; put the rules there, or leave maps.existingConfigMap empty" .Values.maps.existingConfigMap) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if .Values.verify.enabled -}}
{{- $verifyTimeout := include "imageswap.seconds" (toString .Values.verify.timeout) -}}
{{- if and $verifyTimeout $requestTimeout (ge (float64 $verifyTimeout) (float64 $requestTimeout)) -}}
{{- fail (printf "verify.timeout (%s) must be below config.IMAGESWAP_REQUEST_TIMEOUT (%s): an admission waits for its checks within its own deadline" (toString .Values.verify.timeout) (include "imageswap.setting" (list . "IMAGESWAP_REQUEST_TIMEOUT"))) -}}
{{- end -}}
{{- end -}}
{{- range $registry, $_ := .Values.verify.imagePullSecrets -}}
{{- if not (regexMatch "^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$" $registry) -}}
{{- fail (printf "verify.imagePullSecrets: %q is not a registry host (host or host:port, as in the swapped image, without a path)" $registry) -}}
{{- end -}}
{{- end -}}
{{- end }}
