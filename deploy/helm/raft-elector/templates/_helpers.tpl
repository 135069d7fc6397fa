{{/*
Named templates of the raft-elector chart.

Every template here takes the raft-elector chart's own context: `.` in this chart's templates,
`(index .Subcharts "raft-elector")` in a parent chart that depends on it. None of them reads
.Template, which a subchart context does not carry.

The fixed ports and paths below are the sidecar's defaults (cmd/sidecar/config.go); the chart
passes them explicitly so the manifest says what runs.
*/}}

{{- define "raft-elector.peerPort" -}}4041{{- end -}}
{{- define "raft-elector.opsPort" -}}4042{{- end -}}
{{- define "raft-elector.localAddr" -}}127.0.0.1:4040{{- end -}}
{{- define "raft-elector.appPort" -}}8080{{- end -}}
{{- define "raft-elector.dataDir" -}}/var/lib/raft-elector{{- end -}}
{{- define "raft-elector.authDir" -}}/etc/raft-elector/auth{{- end -}}

{{/* Chart name, 63 characters at most (a label value and DNS label). */}}
{{- define "raft-elector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects: <release>-<name>, or the release name when it contains the
name already. 63 characters at most, because some Kubernetes name fields are limited to that
(DNS-1123 labels).
*/}}
{{- define "raft-elector.fullname" -}}
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

{{/*
A name derived from the full name: (list . "suffix") → <fullname>-suffix, the full name cut so
that the whole stays within 63 characters.
*/}}
{{- define "raft-elector.suffixedName" -}}
{{- $ctx := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "raft-elector.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{/* Chart name and version, the helm.sh/chart label. */}}
{{- define "raft-elector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "raft-elector.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- end -}}

{{/* The image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "raft-elector.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "raft-elector.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (a Deployment's selector cannot change). */}}
{{- define "raft-elector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "raft-elector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object: (list . "component"). The chart's own labels win over commonLabels.
*/}}
{{- define "raft-elector.labels" -}}
{{- $ctx := index . 0 -}}
{{- $labels := include "raft-elector.selectorLabels" $ctx | fromYaml -}}
{{- $_ := set $labels "helm.sh/chart" (include "raft-elector.chart" $ctx) -}}
{{- $_ := set $labels "app.kubernetes.io/version" (include "raft-elector.imageTag" $ctx | replace "+" "_" | replace ":" "_" | replace "@" "_" | trunc 63 | trimSuffix "-" | trimSuffix "." | trimSuffix "_") -}}
{{- $_ := set $labels "app.kubernetes.io/managed-by" $ctx.Release.Service -}}
{{- $_ := set $labels "app.kubernetes.io/component" (index . 1) -}}
{{- toYaml (merge $labels $ctx.Values.commonLabels) -}}
{{- end -}}

{{/*
The annotations field of an object's metadata: (list . <the object's own annotations>) plus
commonAnnotations; nothing when both are empty. Starts with a newline and is indented for
metadata, so a template writes `{{- include "raft-elector.annotations" (list . x) }}`.
*/}}
{{- define "raft-elector.annotations" -}}
{{- $ctx := index . 0 -}}
{{- $own := index . 1 | default dict -}}
{{- $all := merge (deepCopy $own) $ctx.Values.commonAnnotations -}}
{{- if $all }}
{{ printf "annotations:\n%s" (toYaml $all | indent 2) | indent 2 }}
{{- end -}}
{{- end -}}

{{/*
Labels of the pods that form one cluster: members.selectorLabels (values rendered as templates)
or the selector labels plus app.kubernetes.io/component=member. The component keeps other pods
of the release (the `helm test` pod) out of the cluster, the Services and the NetworkPolicy.
*/}}
{{- define "raft-elector.memberSelectorLabels" -}}
{{- if .Values.members.selectorLabels -}}
{{- range $k, $v := .Values.members.selectorLabels }}
{{ $k }}: {{ tpl (toString $v) $ | quote }}
{{- end -}}
{{- else -}}
{{ include "raft-elector.selectorLabels" . }}
app.kubernetes.io/component: member
{{- end -}}
{{- end -}}

{{/* The member selector as a label selector string, k=v,k=v (the sidecar's --selector). */}}
{{- define "raft-elector.memberSelector" -}}
{{- $labels := include "raft-elector.memberSelectorLabels" . | fromYaml -}}
{{- $pairs := list -}}
{{- range $k, $v := $labels -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* The ServiceAccount the members run as. */}}
{{- define "raft-elector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "raft-elector.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The bootstrap ConfigMap (--bootstrap-object). */}}
{{- define "raft-elector.bootstrapName" -}}
{{- .Values.bootstrap.name | default (include "raft-elector.suffixedName" (list . "bootstrap")) -}}
{{- end -}}

{{/* The Secret holding the peer authentication key. */}}
{{- define "raft-elector.authSecretName" -}}
{{- .Values.auth.existingSecret | default (include "raft-elector.suffixedName" (list . "auth")) -}}
{{- end -}}

{{/*
Name of the Deployment or StatefulSet. A StatefulSet's pods carry the label
controller-revision-hash=<name>-<10 characters>, which must fit in 63: so 52 at most.
*/}}
{{- define "raft-elector.workloadName" -}}
{{- include "raft-elector.fullname" . | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* Milliseconds of a duration value such as 100ms, 1s or 2m (the schema allows only these). */}}
{{- define "raft-elector.durationMs" -}}
{{- $d := toString . -}}
{{- if not (regexMatch "^[0-9]+(ms|s|m)$" $d) -}}
{{- fail (printf "raft-elector: %q is not a duration such as 100ms, 1s or 2m" $d) -}}
{{- end -}}
{{- $n := regexFind "^[0-9]+" $d | atoi -}}
{{- if hasSuffix "ms" $d -}}{{ $n }}{{- else if hasSuffix "s" $d -}}{{ mul $n 1000 }}{{- else -}}{{ mul $n 60000 }}{{- end -}}
{{- end -}}

{{/*
Milliseconds, rounded up, of a Go duration as the sidecar's flags take it (time.ParseDuration):
one or more <number><unit> with units ns, us, µs, ms, s, m, h, e.g. 500ms, 1.5s, 1m30s; or 0.
(list <duration> <what, for the error>)
*/}}
{{- define "raft-elector.goDurationMs" -}}
{{- $d := toString (index . 0) -}}
{{- $part := `([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)` -}}
{{- if eq $d "0" -}}
0
{{- else if not (regexMatch (printf "^(%s)+$" $part) $d) -}}
{{- fail (printf "raft-elector: %s: %q is not a duration such as 500ms, 1.5s or 1m30s" (index . 1) $d) -}}
{{- else -}}
{{- $ms := 0.0 -}}
{{- range regexFindAll $part $d -1 -}}
{{- $unit := regexFind `[^0-9.]+$` . -}}
{{- $n := float64 (trimSuffix $unit .) -}}
{{- $per := get (dict "ns" 0.000001 "us" 0.001 "µs" 0.001 "μs" 0.001 "ms" 1.0 "s" 1000.0 "m" 60000.0 "h" 3600000.0) $unit -}}
{{- $ms = addf $ms (mulf $n $per) -}}
{{- end -}}
{{- ceil $ms | int64 -}}
{{- end -}}
{{- end -}}

{{/*
Milliseconds of the sidecar's shutdown timeout: how long a stopping leader waits for its
successor. --shutdown-timeout from sidecar.extraArgs (the last one wins, as in the flag package),
else RAFT_ELECTOR_SHUTDOWN_TIMEOUT from sidecar.extraEnv (a literal value), else the sidecar's
default, 2 × sidecar.electionTimeout (which 0 also means).
*/}}
{{- define "raft-elector.shutdownTimeoutMs" -}}
{{- $ms := 0 -}}
{{- range .Values.sidecar.extraEnv -}}
{{- if and (eq (toString .name) "RAFT_ELECTOR_SHUTDOWN_TIMEOUT") (hasKey . "value") -}}
{{- $ms = include "raft-elector.goDurationMs" (list .value "sidecar.extraEnv RAFT_ELECTOR_SHUTDOWN_TIMEOUT") | atoi -}}
{{- end -}}
{{- end -}}
{{- range .Values.sidecar.extraArgs -}}
{{- if hasPrefix "--shutdown-timeout=" . -}}
{{- $ms = include "raft-elector.goDurationMs" (list (trimPrefix "--shutdown-timeout=" .) "sidecar.extraArgs --shutdown-timeout") | atoi -}}
{{- end -}}
{{- end -}}
{{- if eq $ms 0 -}}
{{- $ms = mul 2 (include "raft-elector.durationMs" .Values.sidecar.electionTimeout | atoi) -}}
{{- end -}}
{{- $ms -}}
{{- end -}}

{{/*
Seconds a pod needs after its sidecar's shutdown timeout: the rest of the stop once the handover
is done or given up (the kubelet and the API server's part, the sidecar's servers shutting down,
the application's own stop).
*/}}
{{- define "raft-elector.shutdownMarginSeconds" -}}5{{- end -}}

{{/*
Checks of how values relate, which a JSON schema cannot express. The sidecar would refuse the
same settings at start (cmd/sidecar/config.go); failing at render time says so before any pod
crash-loops.
*/}}
{{- define "raft-elector.validate" -}}
{{- $hb := include "raft-elector.durationMs" .Values.sidecar.heartbeatInterval | atoi -}}
{{- $et := include "raft-elector.durationMs" .Values.sidecar.electionTimeout | atoi -}}
{{- if lt $hb 5 -}}
{{- fail (printf "raft-elector: sidecar.heartbeatInterval %s is below the minimum 5ms" .Values.sidecar.heartbeatInterval) -}}
{{- end -}}
{{- if lt $et (mul 3 $hb) -}}
{{- fail (printf "raft-elector: sidecar.electionTimeout %s must be at least 3 × sidecar.heartbeatInterval (%s) so the leader renews its lease before it runs out" .Values.sidecar.electionTimeout .Values.sidecar.heartbeatInterval) -}}
{{- end -}}
{{- if gt $et 300000 -}}
{{- fail (printf "raft-elector: sidecar.electionTimeout %s is above the maximum 5m" .Values.sidecar.electionTimeout) -}}
{{- end -}}
{{- if eq .Values.sidecar.leaderLabelValue .Values.sidecar.followerLabelValue -}}
{{- fail "raft-elector: sidecar.leaderLabelValue and sidecar.followerLabelValue must differ" -}}
{{- end -}}
{{- if and .Values.auth.acceptUnsigned (not .Values.auth.enabled) -}}
{{- fail "raft-elector: auth.acceptUnsigned needs auth.enabled: it is the transition mode of members that hold the key (--auth-accept-unsigned needs --auth-secret-file); a member without auth accepts unsigned messages anyway. Set auth.enabled=true with it (turning auth on or off takes two upgrades, see the chart README), or drop auth.acceptUnsigned" -}}
{{- end -}}
{{- $shutdown := include "raft-elector.shutdownTimeoutMs" . | atoi -}}
{{- if .Values.workload.enabled -}}
{{- $grace := int .Values.workload.terminationGracePeriodSeconds -}}
{{- $margin := include "raft-elector.shutdownMarginSeconds" . | atoi -}}
{{- $need := add $shutdown (mul $margin 1000) -}}
{{- if lt (mul $grace 1000) $need -}}
{{- $what := printf "2 × sidecar.electionTimeout %s" .Values.sidecar.electionTimeout -}}
{{- if ne $shutdown (mul 2 $et) -}}
{{- $what = "--shutdown-timeout of sidecar.extraArgs/extraEnv" -}}
{{- end -}}
{{- fail (printf "raft-elector: workload.terminationGracePeriodSeconds %d must be at least the sidecar's shutdown timeout (%s = %dms) + %ds for the rest of the pod's stop, i.e. %d, or a stopping leader is killed before it hands over" $grace $what $shutdown $margin (div (add $need 999) 1000)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "raft-elector: serviceMonitor.enabled needs metrics.service.enabled (the ServiceMonitor scrapes that Service's endpoints)" -}}
{{- end -}}
{{- end -}}

{{/*
The sidecar container, as one item of a containers (or initContainers) list. A parent chart
puts it into its own pod template:

  containers:
    - name: my-app
      ...
    {{- include "raft-elector.sidecarContainer" (index .Subcharts "raft-elector") | nindent 4 }}
  volumes:
    {{- include "raft-elector.sidecarVolumes" (index .Subcharts "raft-elector") | nindent 4 }}

With sidecar.native the item carries restartPolicy: Always and belongs in initContainers.
*/}}
{{- define "raft-elector.sidecarContainer" -}}
{{- include "raft-elector.validate" . -}}
{{- $sc := .Values.sidecar -}}
- name: raft-elector
  image: {{ include "raft-elector.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if $sc.native }}
  restartPolicy: Always
  {{- end }}
  args:
    - --discovery=kubernetes
    - {{ printf "--selector=%s" (include "raft-elector.memberSelector" .) | quote }}
    - --peer-addr=:{{ include "raft-elector.peerPort" . }}
    - --local-addr={{ include "raft-elector.localAddr" . }}
    - --ops-addr=:{{ include "raft-elector.opsPort" . }}
    - --data-dir={{ include "raft-elector.dataDir" . }}
    - {{ printf "--heartbeat-interval=%s" $sc.heartbeatInterval | quote }}
    - {{ printf "--election-timeout=%s" $sc.electionTimeout | quote }}
    - {{ printf "--max-voters=%d" (int $sc.maxVoters) | quote }}
    - {{ printf "--bootstrap-object=%s" (include "raft-elector.bootstrapName" .) | quote }}
    - {{ printf "--label-key=%s" $sc.labelKey | quote }}
    - {{ printf "--leader-label-value=%s" $sc.leaderLabelValue | quote }}
    - {{ printf "--follower-label-value=%s" $sc.followerLabelValue | quote }}
    - {{ printf "--log-level=%s" $sc.logLevel | quote }}
    - {{ printf "--log-format=%s" $sc.logFormat | quote }}
    {{- if .Values.auth.enabled }}
    - {{ printf "--auth-secret-file=%s/%s" (include "raft-elector.authDir" .) .Values.auth.secretKey | quote }}
    {{- if .Values.auth.acceptUnsigned }}
    # Transition mode while auth is turned on or off: signs, but accepts unsigned messages too.
    - --auth-accept-unsigned
    {{- end }}
    {{- end }}
    {{- range $sc.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    {{- with $sc.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: peer
      containerPort: {{ include "raft-elector.peerPort" . }}
      protocol: TCP
    - name: metrics
      containerPort: {{ include "raft-elector.opsPort" . }}
      protocol: TCP
  {{- with $sc.startupProbe }}
  {{- if .enabled }}
  startupProbe:
    httpGet:
      path: /healthz
      port: metrics
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $sc.livenessProbe }}
  {{- if .enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $sc.readinessProbe }}
  {{- if .enabled }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
    initialDelaySeconds: {{ .initialDelaySeconds }}
    periodSeconds: {{ .periodSeconds }}
    timeoutSeconds: {{ .timeoutSeconds }}
    failureThreshold: {{ .failureThreshold }}
  {{- end }}
  {{- end }}
  {{- with $sc.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $sc.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: raft-elector-data
      mountPath: {{ include "raft-elector.dataDir" . }}
    {{- if .Values.auth.enabled }}
    # The whole Secret, not a subPath: the kubelet updates a rotated key in place.
    - name: raft-elector-auth
      mountPath: {{ include "raft-elector.authDir" . }}
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The volumes the sidecar container mounts, as items of a pod's volumes list. */}}
{{- define "raft-elector.sidecarVolumes" -}}
# An emptyDir outlives container restarts: a restarted sidecar keeps its term and vote.
- name: raft-elector-data
  {{- with .Values.sidecar.dataVolume.sizeLimit }}
  emptyDir:
    sizeLimit: {{ . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if .Values.auth.enabled }}
- name: raft-elector-auth
  secret:
    secretName: {{ include "raft-elector.authSecretName" . }}
    # 0444: readable whatever user and fsGroup the pod runs as; only this container mounts it.
    defaultMode: 292
{{- end }}
{{- end -}}
