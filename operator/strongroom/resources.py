"""The Kubernetes resources Strongroom defines, named once (crds/ holds their schemas)."""

from __future__ import annotations

GROUP = "strongroom.io"
VERSION = "v1alpha1"
PLURAL = "managedsecrets"
KIND = "ManagedSecret"
FINALIZER = "strongroom.io/finalizer"
GRANT_KIND = "ManagedSecretGrant"
GRANT_PLURAL = "managedsecretgrants"
