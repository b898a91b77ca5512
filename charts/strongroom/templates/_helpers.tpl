{{- define "strongroom.name" -}}strongroom{{- end -}}

{{- define "strongroom.fullname" -}}
{{- if contains "strongroom" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-strongroom" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "strongroom.labels" -}}
app.kubernetes.io/name: strongroom
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "strongroom.selectorLabels" -}}
app.kubernetes.io/name: strongroom
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The values API's own pods (PostgreSQL): labels apart from the operator's, so neither
Deployment nor the metrics Service selects the other's pods. */ -}}
{{- define "strongroom.apiSelectorLabels" -}}
app.kubernetes.io/name: strongroom-values-api
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "strongroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "strongroom.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- /* The audit checkpoint's ConfigMap, in the release namespace. */ -}}
{{- define "strongroom.auditCheckpointName" -}}
{{- default (printf "%s-audit-checkpoint" (include "strongroom.fullname" .)) .Values.auditCheckpoint.name | trunc 253 -}}
{{- end -}}

{{- /* The public sealing keys' ConfigMap, in the release namespace (strongroom seal). */ -}}
{{- define "strongroom.sealingKeysName" -}}
{{- default (printf "%s-sealing-keys" (include "strongroom.fullname" .)) .Values.sealing.configMapName | trunc 253 -}}
{{- end -}}

{{- define "strongroom.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.store.postgres.existingSecret) -}}
{{- fail "replicaCount > 1 needs store.postgres.existingSecret: SQLite allows one writer" -}}
{{- end -}}
{{- if and (eq .Values.keyring.provider "awskms") (not .Values.keyring.awskms.keyId) -}}
{{- fail "keyring.provider=awskms needs keyring.awskms.keyId" -}}
{{- end -}}
{{- if and (eq .Values.keyring.provider "vault") (or (not .Values.keyring.vault.address) (not .Values.keyring.vault.transitKey)) -}}
{{- fail "keyring.provider=vault needs keyring.vault.address and keyring.vault.transitKey" -}}
{{- end -}}
{{- if and (eq .Values.keyring.provider "vault") (not .Values.keyring.vault.kubernetesRole) (not .Values.keyring.vault.tokenSecret) -}}
{{- fail "keyring.provider=vault needs keyring.vault.kubernetesRole or keyring.vault.tokenSecret" -}}
{{- end -}}
{{- if .Values.fence.enabled -}}
{{- $excluded := include "strongroom.fenceExcluded" . | fromJsonArray -}}
{{- range .Values.watchNamespaces -}}
{{- if has . $excluded -}}
{{- fail (printf "watchNamespaces lists %s, which the fence keeps the operator out of (kube-system, fence.excludedNamespaces, and the release namespace unless fence.excludeReleaseNamespace is false)" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* RBAC rules the operator needs in every watched namespace: each verb is one the operator
sends (measured by tests/integration/test_least_privilege.py from the apiserver's audit log).
No wildcards. */ -}}
{{- define "strongroom.namespacedRules" -}}
# ManagedSecrets: listed and watched; read again before a scheduled reconcile (get); the
# finalizer added and removed (patch). The operator never updates a ManagedSecret.
- apiGroups: ["strongroom.io"]
  resources: ["managedsecrets"]
  verbs: ["get", "list", "watch", "patch"]
# ManagedSecretGrants: listed and watched (events only) and listed again at every sync of a
# ManagedSecret that composes from another namespace (data[].fromManagedSecret). Never written.
- apiGroups: ["strongroom.io"]
  resources: ["managedsecretgrants"]
  verbs: ["list", "watch"]
# Status: replaced (update); merged (patch) when the object changed since it was read.
- apiGroups: ["strongroom.io"]
  resources: ["managedsecrets/status"]
  verbs: ["update", "patch"]
# Never a request: setting blockOwnerDeletion on a Secret's ownerReference needs this where the
# OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: ["strongroom.io"]
  resources: ["managedsecrets/finalizers"]
  verbs: ["update"]
# Secrets: read (targets, fromSecret sources), listed and watched (only those labelled
# strongroom.io/managed-by=strongroom, a server-side selector), created, replaced, patched (a
# Secret released with deletionPolicy Retain) and deleted (deletionPolicy Delete, a type change,
# fromSecret.deleteSource). The fence (fence.yaml) narrows what these writes may touch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# ConfigMaps: read (get) when a ManagedSecret takes templates from one (templateFrom), listed
# once and watched (events only, nothing cached) so that a change re-renders its users.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
# Events: created (core/v1; never patched, never events.k8s.io).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if not .Values.trustNamespaceNames }}
# Namespaces: read (get) for their UID, which stored values are bound to (strongroom.bindings).
# In a Role this reaches the Role's own namespace only (the apiserver files a namespace's own
# request under that namespace).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rolloutRestart.enabled }}
# rolloutRestart: the pod template is read (is the Secret consumed?), then patched.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- end -}}

{{- /* The namespaces the fence keeps the operator's Secret writes out of, as a JSON list. */ -}}
{{- define "strongroom.fenceExcluded" -}}
{{- $excluded := list "kube-system" -}}
{{- range .Values.fence.excludedNamespaces -}}
{{- if not (has . $excluded) -}}{{- $excluded = append $excluded . -}}{{- end -}}
{{- end -}}
{{- if and .Values.fence.excludeReleaseNamespace (not (has .Release.Namespace $excluded)) -}}
{{- $excluded = append $excluded .Release.Namespace -}}
{{- end -}}
{{- toJson $excluded -}}
{{- end -}}

{{- /* The store and KEK settings, shared by the operator and the values API's Deployment. */ -}}
{{- define "strongroom.storeEnv" -}}
- name: STRONGROOM_AUTO_MIGRATE
  value: {{ .Values.store.autoMigrate | quote }}
{{- if .Values.store.postgres.existingSecret }}
- name: STRONGROOM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.postgres.existingSecret }}
      key: {{ .Values.store.postgres.key }}
{{- else }}
- name: STRONGROOM_DATABASE_URL
  value: sqlite:////data/strongroom.db
{{- end }}
{{- if eq .Values.keyring.provider "local" }}
- name: STRONGROOM_KEK
  value: local
- name: STRONGROOM_MASTER_KEY_FILE
  value: /etc/strongroom/master-key/{{ .Values.keyring.local.key }}
{{- else if eq .Values.keyring.provider "awskms" }}
- name: STRONGROOM_KEK
  value: awskms:{{ .Values.keyring.awskms.keyId }}
{{- with .Values.keyring.awskms.region }}
# botocore reads AWS_DEFAULT_REGION (AWS_REGION is other SDKs' name for it).
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- else if eq .Values.keyring.provider "vault" }}
- name: STRONGROOM_KEK
  value: vault:{{ .Values.keyring.vault.transitKey }}
- name: VAULT_ADDR
  value: {{ .Values.keyring.vault.address | quote }}
- name: STRONGROOM_VAULT_TRANSIT_MOUNT
  value: {{ .Values.keyring.vault.transitMount | quote }}
{{- with .Values.keyring.vault.namespace }}
- name: VAULT_NAMESPACE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.keyring.vault.kubernetesRole }}
- name: VAULT_K8S_ROLE
  value: {{ .Values.keyring.vault.kubernetesRole | quote }}
- name: VAULT_K8S_MOUNT
  value: {{ .Values.keyring.vault.kubernetesMount | quote }}
{{- else }}
- name: VAULT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.keyring.vault.tokenSecret }}
      key: VAULT_TOKEN
{{- end }}
{{- end }}
{{- end -}}

{{- /* The values API (valuesApi): in the operator's process on SQLite, its own Deployment on
PostgreSQL. "true" or "". */ -}}
{{- define "strongroom.apiInOperator" -}}
{{- if and .Values.valuesApi.enabled (not .Values.store.postgres.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "strongroom.apiTlsSecret" -}}
{{- default (printf "%s-api-tls" (include "strongroom.fullname" .)) .Values.valuesApi.tls.existingSecret -}}
{{- end -}}

{{- /* The server's flags without their leading "--" (strongroom serve, or run --serve-*). */ -}}
{{- define "strongroom.apiFlags" -}}
{{- $flags := list "tls-cert-file=/etc/strongroom/api-tls/tls.crt" "tls-key-file=/etc/strongroom/api-tls/tls.key" (printf "rate=%v" .Values.valuesApi.rate) (printf "burst=%v" .Values.valuesApi.burst) -}}
{{- if .Values.valuesApi.acceptDefaultAudiences -}}{{- $flags = append $flags "accept-default-audiences" -}}{{- end -}}
{{- toJson $flags -}}
{{- end -}}
