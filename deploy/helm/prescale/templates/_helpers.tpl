{{/*
Object names. The prefix is fullnameOverride, else the release name when it
already says "prescale", else "<release>-<chart name>"; cut to 63 characters
(the longest DNS label) without a trailing dash.
*/}}
{{- define "prescale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prescale.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "prescale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "prescale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prescale
{{- end -}}

{{/* What the Deployment, the Service and the PodDisruptionBudget select. */}}
{{- define "prescale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prescale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "prescale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prescale.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret the pods mount at /etc/prescale/tls. */}}
{{- define "prescale.servingSecretName" -}}
{{- if eq .Values.certificates.mode "secret" -}}
{{- required "certificates.secret.name is required with certificates.mode=secret" .Values.certificates.secret.name -}}
{{- else -}}
{{- printf "%s-serving-cert" (include "prescale.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The DNS names the serving certificate must carry. */}}
{{- define "prescale.serviceDNSNames" -}}
{{- $svc := printf "%s.%s.svc" (include "prescale.fullname" .) .Release.Namespace -}}
{{- list $svc (printf "%s.cluster.local" $svc) | toJson -}}
{{- end -}}

{{- define "prescale.checkMode" -}}
{{- $modes := list "selfSigned" "certManager" "secret" -}}
{{- if not (has .Values.certificates.mode $modes) -}}
{{- fail (printf "certificates.mode must be one of %s, got %q" (join ", " $modes) .Values.certificates.mode) -}}
{{- end -}}
{{- end -}}

{{/*
The configuration file: .Values.config with the settings that must agree with
the pod spec put in (see values.yaml, `config`).
*/}}
{{- define "prescale.config" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $server := dict
      "https_address" "0.0.0.0:6443"
      "http_address" "0.0.0.0:8080"
      "tls" (dict "cert_file" "/etc/prescale/tls/tls.crt" "key_file" "/etc/prescale/tls/tls.key") -}}
{{- $config = mergeOverwrite $config (dict "server" $server) -}}
{{- if $config.expander -}}
{{- $_ := set $config.expander "address" "0.0.0.0:8443" -}}
{{- end -}}
{{- if $config.server.keda_scaler -}}
{{- $_ := set $config.server.keda_scaler "address" "0.0.0.0:9443" -}}
{{- end -}}
{{- $buffers := $config.capacity_buffers | default dict -}}
{{- if not $buffers.lease_namespace -}}
{{- $_ := set $buffers "lease_namespace" .Release.Namespace -}}
{{- end -}}
{{- $_ := set $config "capacity_buffers" $buffers -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
certificates.mode=selfSigned: the CA and serving pair as JSON {ca, crt, key}
(base64 PEM), for the Secret, the caBundles and the pods' checksum/tls alike.
Reused from the existing Secret when Helm can see the cluster and the Secret is
there (upgrades); generated otherwise, once per render: the result is kept on
the root context, which all templates of the chart share. Call it with the root
context.
*/}}
{{- define "prescale.selfSignedPair" -}}
{{- if not (hasKey . "prescaleSelfSignedPair") -}}
{{- $pair := "" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "prescale.servingSecretName" .) -}}
{{- $data := $secret.data | default dict -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $pair = dict "ca" (index $data "ca.crt") "crt" (index $data "tls.crt") "key" (index $data "tls.key") | toJson -}}
{{- else -}}
{{- $days := int .Values.certificates.selfSigned.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "prescale.fullname" .)) $days -}}
{{- $names := include "prescale.serviceDNSNames" . | fromJsonArray -}}
{{- $cert := genSignedCert (first $names) nil $names $days $ca -}}
{{- $pair = dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) | toJson -}}
{{- end -}}
{{- $_ := set . "prescaleSelfSignedPair" $pair -}}
{{- end -}}
{{- get . "prescaleSelfSignedPair" -}}
{{- end -}}
