"""Who is calling (TokenReview) and may they (SubjectAccessReview), asked of the cluster.

**Authentication.** The bearer token goes to the apiserver in a TokenReview with the audience
``strongroom`` (tokens minted for another audience are refused: a pod's default token, made for
the apiserver, cannot be replayed here unless the server was started with
``--accept-default-audiences``). An expired token, a token of a deleted ServiceAccount or a
garbage string all come back unauthenticated: 401.

**Authorization.** One SubjectAccessReview per request on the virtual subresource
``managedsecrets/values`` in group ``strongroom.io``, with the namespace, the secret's name and
the verb (``get`` plaintext, ``list`` masked names and history, ``create``/``update`` set,
``delete``, ``verify`` compare). The cluster's RBAC answers, so an ordinary Role grants "may
set values of payments/stripe"; nothing about rights lives in Strongroom.

**Cache.** Both answers are kept for at most :data:`MAX_CACHE_SECONDS` (keyed by the token's
SHA-256, never the token; and by the whole user info and request attributes), so a right
revoked, a ServiceAccount deleted or a token expired takes effect within that time. Refusals
of authentication are not cached (nothing to save: a bad token is refused either way).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from strongroom.server.errors import ApiError
from strongroom.server.flags import MAX_CACHE_SECONDS

AUDIENCE = "strongroom"
GROUP = "strongroom.io"
RESOURCE = "managedsecrets"
SUBRESOURCE = "values"
_MAX_ENTRIES = 10_000


@dataclasses.dataclass(frozen=True)
class Identity:
    """A caller as the cluster authenticated them."""

    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    verb: str
    namespace: str
    name: str
    reason: str = ""

    @property
    def right(self) -> str:
        """The right asked for, as a Role would grant it (the missing one when refused)."""
        where = f"{self.namespace}/{self.name}" if self.name else f"namespace {self.namespace}"
        return f"{self.verb} on {RESOURCE}/{SUBRESOURCE}.{GROUP} for {where}"


def origin(identity: Identity, source: str, decision: Decision | None) -> str:
    """The audit origin (:mod:`strongroom.audit`): compact JSON of who, from where, and why."""
    doc: dict[str, Any] = {"uid": identity.uid, "groups": list(identity.groups), "source": source}
    if decision is not None:
        doc["decision"] = "allowed" if decision.allowed else f"denied: needs {decision.right}"
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


class _TtlCache:
    """A small time-bounded map; the oldest entries go when it is full."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._entries.get(key)
        if hit is None or hit[0] <= self._clock():
            self._entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if self.seconds <= 0:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            now = self._clock()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= _MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (self._clock() + self.seconds, value)


class Reviewer:
    """Asks the apiserver who a token is and what its holder may do."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        cache_seconds: float = MAX_CACHE_SECONDS,
        accept_default_audiences: bool = False,
    ) -> None:
        if not 0 <= cache_seconds <= MAX_CACHE_SECONDS:
            raise ValueError(f"the decision cache keeps answers 0 to {MAX_CACHE_SECONDS:g} s")
        self.authn = k8s.AuthenticationV1Api(api)
        self.authz = k8s.AuthorizationV1Api(api)
        self.accept_default_audiences = accept_default_audiences
        self._identities = _TtlCache(cache_seconds)
        self._decisions = _TtlCache(cache_seconds)

    async def authenticate(
        self, header: str | None, *, before_review: Callable[[], None] = lambda: None
    ) -> Identity:
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError("unauthenticated", "a bearer token is required (Authorization: "
                           "Bearer TOKEN, audience strongroom)")  # fmt: skip
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        known = self._identities.get(digest)
        if known is not None:
            return known  # type: ignore[no-any-return]
        before_review()  # a review costs the apiserver: the caller may refuse it first (429)
        identity = await asyncio.to_thread(self._review, token, [AUDIENCE])
        if identity is None and self.accept_default_audiences:
            identity = await asyncio.to_thread(self._review, token, None)
        if identity is None:
            raise ApiError("unauthenticated", "the token was not accepted (expired, revoked, "
                           "or not made for the audience strongroom)")  # fmt: skip
        self._identities.put(digest, identity)
        return identity

    def _review(self, token: str, audiences: list[str] | None) -> Identity | None:
        body = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token, audiences=audiences))
        review = _ask(lambda: self.authn.create_token_review(body), "the token")
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return Identity(
            username=str(user.username or ""),
            uid=str(user.uid or ""),
            groups=tuple(user.groups or ()),
            extra=_frozen_extra(user.extra),
        )

    async def authorize(self, identity: Identity, verb: str, namespace: str, name: str) -> Decision:
        key = (identity, verb, namespace, name)
        known = self._decisions.get(key)
        if known is not None:
            return known  # type: ignore[no-any-return]
        decision = await asyncio.to_thread(self._access, identity, verb, namespace, name)
        self._decisions.put(key, decision)
        return decision

    def _access(self, identity: Identity, verb: str, namespace: str, name: str) -> Decision:
        spec = k8s.V1SubjectAccessReviewSpec(
            user=identity.username,
            uid=identity.uid or None,
            groups=list(identity.groups),
            extra={k: list(v) for k, v in identity.extra} or None,
            resource_attributes=k8s.V1ResourceAttributes(
                group=GROUP,
                resource=RESOURCE,
                subresource=SUBRESOURCE,
                namespace=namespace,
                name=name or None,
                verb=verb,
            ),
        )
        body = k8s.V1SubjectAccessReview(spec=spec)
        review = _ask(lambda: self.authz.create_subject_access_review(body), "the access")
        status = review.status
        allowed = bool(status is not None and status.allowed and not status.denied)
        reason = str(status.reason or "") if status is not None else ""
        return Decision(allowed, verb, namespace, name, reason[:200])


def _ask(call: Callable[[], Any], what: str) -> Any:
    """One review call; a failure is 503 (fail closed), told without the apiserver's text."""
    try:
        return call()
    except ApiException as exc:
        raise ApiError("unavailable", f"the cluster could not review {what} "
                       f"(HTTP {exc.status})") from None  # fmt: skip
    except Exception:  # noqa: BLE001 - a connection failure, told without its text
        raise ApiError("unavailable", f"the cluster could not review {what}") from None


def _frozen_extra(extra: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((str(k), tuple(str(x) for x in v or ())) for k, v in (extra or {}).items()))
