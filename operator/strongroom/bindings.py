"""Values bound to their namespace's identity, not only its name.

A namespace can be deleted and created again under the same name, by another tenant: without
this, the new ``payments`` namespace's ManagedSecret ``db`` received the old tenant's password.
The store records the UID of the namespace whose ManagedSecret first synced a secret
(``secrets.namespace_uid``) and refuses it to a namespace with another UID
(:class:`~strongroom.errors.NamespaceMismatch`, ``Ready=False NamespaceMismatch``) until an
administrator hands it over (``strongroom secret rebind``, audited).

The check runs where the operator reads values (:meth:`strongroom.api.Strongroom.resolve`); the
CLI and Python API address secrets by name and are for administrators, who may read anything.
With ``--trust-namespace-names`` (a restored cluster, several clusters sharing one store) the
operator passes no UID, and nothing is checked or bound.
"""

from __future__ import annotations

from strongroom.errors import NamespaceMismatch
from strongroom.store.repository import SecretRow

BIND_ACTION = "secret.bind"
REBIND_ACTION = "secret.rebind"


def needs_binding(secret: SecretRow, uid: str | None) -> bool:
    """True when ``secret`` is not bound yet and ``uid`` should be recorded for it.

    Raises :class:`NamespaceMismatch` when it is bound to another namespace UID.
    """
    if uid is None:
        return False
    if secret.namespace_uid is None:
        return True
    if secret.namespace_uid != uid:
        raise NamespaceMismatch(mismatch_message(secret.namespace, secret.name, secret.namespace_uid))
    return False


def mismatch_message(namespace: str, name: str, bound: str) -> str:
    return (
        f"the stored values belong to an earlier namespace {namespace} (uid {bound}); if they "
        f"are meant for this one, an administrator runs `strongroom secret rebind {namespace}/{name}`"
    )


def bound_detail(uid: str) -> str:
    """The audit detail of a binding: which namespace instance now holds the values."""
    return f"bound to namespace uid {uid}"
