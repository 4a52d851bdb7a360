{{/* Chart name. */}}
{{- define "pdeserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name. 50 characters at most: KubeRay names the RayCluster "<name>-<5 chars>" and its
label values (ray.io/cluster) must stay within 63.
*/}}
{{- define "pdeserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pdeserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object. */}}
{{- define "pdeserve.labels" -}}
helm.sh/chart: {{ include "pdeserve.chart" . }}
{{ include "pdeserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pdeserve
{{- end }}

{{- define "pdeserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pdeserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* What the Service and the monitors select: the Ray pods (head and workers), not the retraining job. */}}
{{- define "pdeserve.raySelectorLabels" -}}
{{ include "pdeserve.selectorLabels" . }}
app.kubernetes.io/component: ray
{{- end }}

{{- define "pdeserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pdeserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding Ray's own token (key auth_token), or "" when Ray's token authentication is off. */}}
{{- define "pdeserve.rayAuthSecretName" -}}
{{- if .Values.rayAuth.enabled }}
{{- default (printf "%s-ray-auth" (include "pdeserve.fullname" .)) .Values.rayAuth.existingSecret }}
{{- end }}
{{- end }}

{{/* The variable holding the auth token in the Ray pods, or "" when authentication is off. */}}
{{- define "pdeserve.authTokenEnv" -}}
{{- if .Values.auth.existingSecret }}PDESERVE_AUTH_TOKEN{{ end }}
{{- end }}

{{/* The image; (dict "root" $ "gpu" true) gives the CUDA build. */}}
{{- define "pdeserve.image" -}}
{{- $image := .root.Values.image }}
{{- $tag := default .root.Chart.AppVersion $image.tag }}
{{- if .gpu }}
{{- $tag = default (printf "%s-gpu" $tag) $image.gpuTag }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}

{{/* The model storage volume, or nothing for models baked into the image. */}}
{{- define "pdeserve.modelVolume" -}}
{{- $storage := .Values.modelStorage }}
{{- if eq $storage.type "pvc" }}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "pdeserve.fullname" . }}-models
{{- else if eq $storage.type "existingClaim" }}
- name: models
  persistentVolumeClaim:
    claimName: {{ required "modelStorage.existingClaim is required with modelStorage.type existingClaim" $storage.existingClaim }}
{{- else if eq $storage.type "objectStore" }}
- name: models
  emptyDir:
    sizeLimit: {{ $storage.objectStore.sizeLimit }}
{{- end }}
{{- end }}

{{/* Writable emptyDirs under a read-only root filesystem, each with its size limit, as volumes ... */}}
{{- define "pdeserve.writableVolumes" -}}
{{- range $i, $dir := .Values.writableDirs }}
- name: writable-{{ $i }}
  emptyDir:
    sizeLimit: {{ $dir.sizeLimit }}
{{- end }}
{{- end }}

{{/* ... and their mounts. */}}
{{- define "pdeserve.writableMounts" -}}
{{- range $i, $dir := .Values.writableDirs }}
- name: writable-{{ $i }}
  mountPath: {{ $dir.path }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every pod of the chart: (dict "root" $ "kubernetesApi" false). Only a pod
that calls the Kubernetes API (the Ray head when it runs KubeRay's autoscaler) gets a service account token.
*/}}
{{- define "pdeserve.podSettings" -}}
{{- $values := .root.Values }}
serviceAccountName: {{ include "pdeserve.serviceAccountName" .root }}
automountServiceAccountToken: {{ .kubernetesApi }}
{{- with $values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | trim | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $values.podSecurityContext | trim | nindent 2 }}
{{- end }}

{{/* Scheduling of one group: (dict "group" .Values.head) */}}
{{- define "pdeserve.scheduling" -}}
{{- with .group.nodeSelector }}
nodeSelector:
  {{- toYaml . | trim | nindent 2 }}
{{- end }}
{{- with .group.tolerations }}
tolerations:
  {{- toYaml . | trim | nindent 2 }}
{{- end }}
{{- with .group.affinity }}
affinity:
  {{- toYaml . | trim | nindent 2 }}
{{- end }}
{{- end }}

{{/* Container resources, with (dict "resources" ... "gpus" N) adding nvidia.com/gpu to both sides. */}}
{{- define "pdeserve.resources" -}}
{{- $resources := deepCopy (default dict .resources) }}
{{- if .gpus }}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" (toString .gpus)) (default dict $resources.limits)) }}
{{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" (toString .gpus)) (default dict $resources.requests)) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* rayStartParams as an inline mapping: KubeRay wants every value as a string. */}}
{{- define "pdeserve.rayStartParams" -}}
{{- $params := dict }}
{{- range $key, $value := . }}
{{- $_ := set $params $key (toString $value) }}
{{- end }}
{{- toJson $params }}
{{- end }}

{{/*
The pod template of a Ray group: (dict "root" $ "group" .Values.head "head" true "gpus" 0).
Every Ray pod mounts the models read-only and serves gRPC behind a readiness probe.
*/}}
{{- define "pdeserve.rayPodTemplate" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $storage := $values.modelStorage }}
metadata:
  labels:
    {{- include "pdeserve.labels" $root | trim | nindent 4 }}
    app.kubernetes.io/component: ray
spec:
  {{- include "pdeserve.podSettings" (dict "root" $root "kubernetesApi" (and .head $values.autoscaler.enabled)) | trim | nindent 2 }}
  {{- with include "pdeserve.scheduling" (dict "group" .group) }}
{{- . | trim | nindent 2 }}
{{- end }}
  {{- if eq $storage.type "objectStore" }}
  initContainers:
    - name: sync-models
      image: {{ $storage.objectStore.image }}
      imagePullPolicy: IfNotPresent
      args:
        - s3
        - sync
        - --only-show-errors
        {{- with $storage.objectStore.endpointUrl }}
        - --endpoint-url
        - {{ . }}
        {{- end }}
        - {{ required "modelStorage.objectStore.uri is required with modelStorage.type objectStore" $storage.objectStore.uri }}
        - {{ $storage.mountPath }}
      env:
        - name: HOME  # the AWS CLI keeps its cache there; the root filesystem is read-only
          value: /tmp
      {{- with $storage.objectStore.secretName }}
      envFrom:
        - secretRef:
            name: {{ . }}
      {{- end }}
      {{- with $storage.objectStore.resources }}
      resources:
        {{- toYaml . | trim | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $values.securityContext | trim | nindent 8 }}
      volumeMounts:
        - name: models
          mountPath: {{ $storage.mountPath }}
        - name: sync-tmp
          mountPath: /tmp
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" .head }}
      image: {{ include "pdeserve.image" (dict "root" $root "gpu" (gt (float64 .gpus) 0.0)) }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      env:
        {{- range $name, $value := $values.rayEnvironment }}
        - name: {{ $name }}
          value: {{ $value | toString | quote }}
        {{- end }}
        {{- with include "pdeserve.rayAuthSecretName" $root }}
        # Ray's token authentication (GCS, dashboard, Ray client); KubeRay reads the same Secret.
        - name: RAY_AUTH_MODE
          value: token
        - name: RAY_AUTH_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . }}
              key: auth_token
        {{- end }}
        {{- with include "pdeserve.authTokenEnv" $root }}
        - name: {{ . }}
          valueFrom:
            secretKeyRef:
              name: {{ $values.auth.existingSecret }}
              key: {{ $values.auth.secretKey }}
        {{- end }}
      ports:
        - name: serve-grpc
          containerPort: {{ $values.service.grpcPort }}
        - name: serve
          containerPort: {{ $values.service.httpPort }}
        - name: metrics
          containerPort: {{ $values.service.metricsPort }}
        {{- if .head }}
        - name: gcs
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
        {{- end }}
      resources:
        {{- include "pdeserve.resources" (dict "resources" .group.resources "gpus" .gpus) | trim | nindent 8 }}
      readinessProbe:
        grpc:
          port: {{ $values.service.grpcPort }}
        {{- toYaml $values.probes.readiness | trim | nindent 8 }}
      {{- if .head }}
      # Ray's control plane only (dashboard and GCS; public under token authentication), never the data
      # plane: a head without a serving replica is unready, not restarted.
      livenessProbe:
        httpGet:
          path: /api/gcs_healthz
          port: dashboard
        {{- toYaml $values.probes.liveness | trim | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $values.securityContext | trim | nindent 8 }}
      volumeMounts:
        {{- if ne $storage.type "image" }}
        - name: models
          mountPath: {{ $storage.mountPath }}
          readOnly: true
        {{- end }}
        - name: shared-memory
          mountPath: /dev/shm
        {{- include "pdeserve.writableMounts" $root | trim | nindent 8 }}
  volumes:
    {{- with include "pdeserve.modelVolume" $root }}
{{- . | trim | nindent 4 }}
{{- end }}
    - name: shared-memory
      emptyDir:
        medium: Memory
        sizeLimit: {{ $values.sharedMemorySize }}
    {{- include "pdeserve.writableVolumes" $root | trim | nindent 4 }}
    {{- if eq $storage.type "objectStore" }}
    - name: sync-tmp
      emptyDir:
        sizeLimit: {{ $storage.objectStore.tmpSizeLimit }}
    {{- end }}
{{- end }}
