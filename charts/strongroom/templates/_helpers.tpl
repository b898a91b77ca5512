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

{{- define "strongroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "strongroom.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- /* The audit checkpoint's ConfigMap, in the release namespace. */ -}}
{{- define "strongroom.auditCheckpointName" -}}
{{- default (printf "%s-audit-checkpoint" (include "strongroom.fullname" .)) .Values.auditCheckpoint.name | trunc 253 -}}
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
