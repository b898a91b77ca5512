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
{{- end -}}

{{- /* RBAC rules the operator needs in every watched namespace. No wildcards. */ -}}
{{- define "strongroom.namespacedRules" -}}
- apiGroups: ["strongroom.io"]
  resources: ["managedsecrets"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["strongroom.io"]
  resources: ["managedsecrets/status"]
  verbs: ["get", "patch", "update"]
# Setting blockOwnerDeletion on a Secret's ownerReference needs this where the
# OwnerReferencesPermissionEnforcement admission plugin is on.
- apiGroups: ["strongroom.io"]
  resources: ["managedsecrets/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end -}}
