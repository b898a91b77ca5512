"""What a tenant may ask the operator to do: one module, cited by the CRD, the admission
policies and the operator.

The operator holds Secret rights in every namespace it watches; whoever may create a
ManagedSecret holds, through it, whatever the operator does for them. So the operator keeps
these rules itself, even where the admission policies (``crds/admission-policy.yaml`` for
authors, the chart's fence for the operator's own identity) are absent:

- **Ownership.** A Secret is the operator's to write or delete only when it names this
  ManagedSecret's UID: the controller ownerReference (creationPolicy Owner) or the
  ``strongroom.io/owner-uid`` annotation (every Secret the operator creates). The labels are
  not proof (they name the ManagedSecret, and a name is reused by the next object of that
  name), nor is their absence disproof: a Secret whose labels were removed but that still
  names the UID is repaired, labels included. Only someone who may create or update the Secret
  can put the UID there, and they could write it themselves; a token is nobody's.
- **Merge consent.** Keys are merged into a Secret Strongroom does not own only when that
  Secret carries ``strongroom.io/merge-from: <ManagedSecret name>``: whoever may annotate it
  may write it, and so consents (Sealed Secrets' rule: overwrite only what it owns or what
  opts in).
- **No tokens.** Secrets of the ServiceAccount-token and bootstrap-token types are trusted by
  the apiserver and the kubelet; Strongroom neither writes nor imports them, and no label or
  annotation of a Secret it writes may sit under ``kubernetes.io/``, ``k8s.io/`` or its own
  ``strongroom.io/`` (the ServiceAccount-name annotation of a token is one of those).
- **Consumers.** A workload is restarted only when its pod template reads the Secret (env,
  envFrom, a secret or projected volume); a ManagedSecret cannot restart anything else.
- **Floors.** Durations have minimums (a refresh every 0 s would busy-loop the shared
  operator, audit rows and restarts on every pass) and a maximum (a 17-digit number does not
  fit a timedelta); the schedule is floored again whatever the spec says.

Every refusal is a :class:`SpecRefusedError` whose message names the field and the rule, never a
value of a Secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from strongroom.config import parse_duration
from strongroom.validate import K8S_SECRET_MAX_BYTES

MANAGED_BY = "strongroom.io/managed-by"
MANAGED_BY_VALUE = "strongroom"
OWNER_LABEL = "strongroom.io/managed-secret"
OWNER_UID_ANNOTATION = "strongroom.io/owner-uid"
MERGE_CONSENT_ANNOTATION = "strongroom.io/merge-from"

TOKEN_SECRET_TYPES = frozenset(
    {"kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token"}
)
RESERVED_DOMAINS = ("kubernetes.io", "k8s.io", "strongroom.io")

MIN_REFRESH_INTERVAL = timedelta(seconds=10)
MIN_ROTATION_PERIOD = timedelta(hours=1)
MIN_KEEP_PREVIOUS = timedelta(0)
MAX_DURATION = timedelta(days=36500)  # a hundred years: longer is a typo, not a policy
MAX_DURATION_LENGTH = 32
# A Secret's data is at most 1 MiB; a store entry past this many keys is refused new ones (a
# tenant renaming generated keys over and over would otherwise grow the shared store forever).
MAX_SECRET_BYTES = K8S_SECRET_MAX_BYTES
MAX_KEYS = 256
# Nothing is scheduled sooner than this after a reconcile, whatever the spec asks.
MIN_RESCHEDULE = MIN_REFRESH_INTERVAL


class SpecRefusedError(ValueError):
    """A ManagedSecret asks for something the policy refuses; the message is safe to show."""


def duration(field: str, text: object, minimum: timedelta) -> timedelta:
    """Parse a spec duration and hold it to ``minimum`` and :data:`MAX_DURATION`."""
    if not isinstance(text, str) or len(text) > MAX_DURATION_LENGTH:
        raise SpecRefusedError(f"{field} must be a duration such as 90s, 15m, 1h30m or 7d "
                          f"(at most {MAX_DURATION_LENGTH} characters)")  # fmt: skip
    try:
        parsed = parse_duration(text)
    except (ValueError, OverflowError):
        raise SpecRefusedError(f"{field} must be a duration such as 90s, 15m, 1h30m or 7d") from None
    if parsed > MAX_DURATION:
        raise SpecRefusedError(f"{field} must be at most {MAX_DURATION.days}d")
    if parsed < minimum:
        raise SpecRefusedError(f"{field} must be at least {_short(minimum)}")
    return parsed


def _short(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"


def check_key_count(count: int, name: str) -> None:
    """A store entry may not grow past :data:`MAX_KEYS` keys through the operator."""
    if count > MAX_KEYS:
        raise SpecRefusedError(f"{name} would hold {count} keys in the store; at most {MAX_KEYS} "
                               "(remove keys with strongroom secret set NS/NAME --unset KEY)")  # fmt: skip


def check_target_type(secret_type: str) -> None:
    if secret_type in TOKEN_SECRET_TYPES:
        raise SpecRefusedError(f"target.type {secret_type} is refused: Strongroom never writes "
                          "tokens that the apiserver or the kubelet would trust")  # fmt: skip


def reserved(key: str) -> bool:
    """A label or annotation key under a prefix that Kubernetes or Strongroom gives meaning."""
    prefix, slash, _ = key.rpartition("/")
    if not slash:
        return False
    return any(prefix == domain or prefix.endswith("." + domain) for domain in RESERVED_DOMAINS)


def check_metadata_keys(field: str, keys: Iterable[str], *, labels: bool = False) -> None:
    """Refuse reserved keys; Kubernetes' recommended ``app.kubernetes.io/`` labels excepted."""
    refused = sorted(key for key in keys
                     if reserved(key) and not (labels and key.startswith("app.kubernetes.io/")))
    if refused:
        raise SpecRefusedError(f"{field} may not use the reserved prefixes kubernetes.io/, k8s.io/ "
                          f"or strongroom.io/: {', '.join(refused)[:120]}")  # fmt: skip


# -- ownership and consent --------------------------------------------------------------------


def controller_reference(ref: Mapping[str, Any]) -> bool:
    """An ownerReference that makes a ManagedSecret the controller of the object."""
    return (ref.get("kind") == "ManagedSecret" and bool(ref.get("controller"))
            and str(ref.get("apiVersion", "")).startswith("strongroom.io/"))  # fmt: skip


def owns(metadata: Mapping[str, Any], uid: str, secret_type: str | None = None) -> bool:
    """Whether a Secret names the ManagedSecret of ``uid`` as its owner, labels or not.

    Its UID in the ``strongroom.io/owner-uid`` annotation or in the controller ownerReference:
    whoever can put it there may create or update that Secret, and so could write it
    themselves (docs/security.md, "Who may mark a Secret as a ManagedSecret's"). A token is
    never anyone's to write, whatever it names.
    """
    if not uid or secret_type in TOKEN_SECRET_TYPES:
        return False
    if (metadata.get("annotations") or {}).get(OWNER_UID_ANNOTATION) == uid:
        return True
    return any(ref.get("uid") == uid and controller_reference(ref)
               for ref in metadata.get("ownerReferences") or ())  # fmt: skip


def target_refusal(metadata: Mapping[str, Any], secret_type: str | None, name: str,
                   uid: str) -> str | None:  # fmt: skip
    """Why an existing Secret may not be written as this ManagedSecret's target (Owner or
    Orphan), or None when it is this ManagedSecret's."""
    if owns(metadata, uid, secret_type):
        return None
    target = metadata.get("name", "")
    if secret_type in TOKEN_SECRET_TYPES:
        return f"Secret {target} is of type {secret_type}; Strongroom does not write tokens"
    return (f"Secret {target} exists and does not belong to this ManagedSecret (no controller "
            f"ownerReference or {OWNER_UID_ANNOTATION} naming it); delete it, or merge into it "
            "with its consent (creationPolicy Merge)")  # fmt: skip


def owned_by_another(metadata: Mapping[str, Any], uid: str) -> bool:
    """A Secret another ManagedSecret owns: never merged into, never adopted."""
    annotations = metadata.get("annotations") or {}
    other = annotations.get(OWNER_UID_ANNOTATION)
    if other and other != uid:
        return True
    return any(
        ref.get("kind") == "ManagedSecret" and ref.get("uid") != uid
        for ref in metadata.get("ownerReferences") or ()
    )


def merge_consented(metadata: Mapping[str, Any], name: str) -> bool:
    """The Secret's writers have opted in to keys from the ManagedSecret ``name``."""
    return (metadata.get("annotations") or {}).get(MERGE_CONSENT_ANNOTATION) == name


def merge_refusal(metadata: Mapping[str, Any], secret_type: str | None, name: str,
                  uid: str) -> str | None:  # fmt: skip
    """Why keys may not be merged into this existing Secret, or None when they may."""
    target = metadata.get("name", "")
    if secret_type in TOKEN_SECRET_TYPES:
        return f"Secret {target} is of type {secret_type}; Strongroom does not write tokens"
    if owned_by_another(metadata, uid):
        return f"Secret {target} belongs to another ManagedSecret"
    if not merge_consented(metadata, name):
        return (f"Secret {target} has not opted in: whoever may update it consents by "
                f"annotating it {MERGE_CONSENT_ANNOTATION}={name}")  # fmt: skip
    return None


def import_refusal(secret_type: str | None, source: str) -> str | None:
    """Why a Secret may not be imported with fromSecret, or None when it may."""
    if secret_type in TOKEN_SECRET_TYPES:
        return f"Secret {source} is of type {secret_type}; tokens are not imported"
    return None


# -- consumers --------------------------------------------------------------------------------


def _containers(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(field) or ()


def consumed_secrets(pod: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a pod spec reads: env, envFrom, secret and projected volumes."""
    names: set[str] = set()
    for container in _containers(pod):
        for env in container.get("env") or ():
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            names.add(ref.get("name") or "")
        for source in container.get("envFrom") or ():
            names.add((source.get("secretRef") or {}).get("name") or "")
    for volume in pod.get("volumes") or ():
        names.add((volume.get("secret") or {}).get("secretName") or "")
        for projected in (volume.get("projected") or {}).get("sources") or ():
            names.add((projected.get("secret") or {}).get("name") or "")
    names.discard("")
    return names


def consumes(workload: Mapping[str, Any], secret_name: str) -> bool:
    """Whether a Deployment, StatefulSet or DaemonSet's pod template reads ``secret_name``."""
    pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    return secret_name in consumed_secrets(pod)


def floor_schedule(now: datetime, candidates: Sequence[datetime]) -> datetime | None:
    """The next reconcile: the earliest candidate, never sooner than the floor after ``now``."""
    if not candidates:
        return None
    return max(min(candidates), now + MIN_RESCHEDULE)
