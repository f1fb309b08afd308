{{/* names and settings shared by every template */}}
{{- define "streamjobs.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamjobs.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "streamjobs.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* the worker group and main topic, named as streamjobs names them (settings.group, topics) */}}
{{- define "streamjobs.group" -}}
{{- printf "%s.%s.workers" .Values.kafka.topicPrefix .Values.kafka.queue -}}
{{- end -}}
{{- define "streamjobs.mainTopic" -}}
{{- printf "%s.%s" .Values.kafka.topicPrefix .Values.kafka.queue -}}
{{- end -}}

{{- define "streamjobs.saslSecret" -}}
{{- default (printf "%s-sasl" (include "streamjobs.fullname" .)) .Values.kafka.sasl.existingSecret -}}
{{- end -}}

{{/* STREAMJOBS_* settings every container gets; the password from the Secret, never a value */}}
{{- define "streamjobs.env" -}}
- name: STREAMJOBS_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: STREAMJOBS_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: STREAMJOBS_QUEUE
  value: {{ .Values.kafka.queue | quote }}
- name: STREAMJOBS_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: STREAMJOBS_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: STREAMJOBS_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.enabled }}
- name: STREAMJOBS_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: STREAMJOBS_SASL_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: STREAMJOBS_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "streamjobs.saslSecret" . }}
      key: password
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: STREAMJOBS_SSL_CA_LOCATION
  value: /etc/streamjobs/tls/{{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end -}}

{{- define "streamjobs.tlsVolume" -}}
{{- if .Values.kafka.tls.caSecret }}
volumes:
  - name: kafka-ca
    secret:
      secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- end -}}

{{- define "streamjobs.tlsMount" -}}
{{- if .Values.kafka.tls.caSecret }}
volumeMounts:
  - name: kafka-ca
    mountPath: /etc/streamjobs/tls
    readOnly: true
{{- end }}
{{- end -}}

{{/* the replica ceiling: group members (replicas x processes) never above the partitions */}}
{{- define "streamjobs.checkScaling" -}}
{{- $members := mul (int .Values.autoscaling.maxReplicas) (int .Values.worker.processes) -}}
{{- if gt $members (int .Values.kafka.partitions) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) x worker.processes (%d) = %d group members, more than kafka.partitions (%d): the extra ones would sit idle" (int .Values.autoscaling.maxReplicas) (int .Values.worker.processes) $members (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
