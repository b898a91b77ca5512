"""Paths, handlers and the guard every request passes: authenticate, limit, authorize, audit.

=========================================================  =========  ===================
path (under ``/v1/namespaces/{ns}/secrets``)               method     verb on managedsecrets/values
=========================================================  =========  ===================
``""``                           list names, masked values  GET        ``list`` (namespace)
``/{name}``                      all keys, plaintext        GET        ``get``
``/{name}/keys/{key}``           one key, plaintext         GET        ``get``
``/{name}``                      set keys (merge)           PATCH      ``create`` / ``update``
``/{name}``                      set keys (replace all)     PUT        ``create`` / ``update``
``/{name}``                      delete every version       DELETE     ``delete``
``/{name}/history``              versions, no values        GET        ``list``
``/{name}/verify``               compare, constant time     POST       ``verify``
=========================================================  =========  ===================

``create`` when the secret has no version yet, ``update`` when it has. ``verify`` is a verb of
its own (RBAC takes any verb), because a caller allowed to compare can test guesses: grant it
like ``get``. Each path segment is checked against Kubernetes' own name rules on the raw path
(no percent-encoding, no ``.``/``..`` segments, no upper case), so no spelling of a path
reaches another namespace or secret than the one the review was asked for.

The guard, in order: a bearer token (401), the caller's rate limit (429), the path's shape
(400), a SubjectAccessReview (403, audited as ``api.<op>`` ``denied`` with the missing right),
then the store call, made with ``actor`` = the username and the audit origin (UID, groups,
source address, decision) set (:mod:`strongroom.audit`), so the store's own event says who.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from strongroom import validate
from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Outcome, clip, with_origin
from strongroom.errors import NotFound, StrongroomError
from strongroom.server import openapi
from strongroom.server.auth import Decision, Identity, Reviewer, origin
from strongroom.server.errors import ApiError, from_http, from_store, response
from strongroom.server.ratelimit import RateLimiter

MASK = "••••••••"
BASE = "/v1/namespaces/{ns}/secrets"
log = logging.getLogger("strongroom.server")

REQUESTS = Counter("strongroom_api_requests", "Values API requests by route, status code and "
                   "authorization decision.", ["route", "code", "decision"])  # fmt: skip
LATENCY = Histogram(
    "strongroom_api_request_seconds", "Values API request latency by route.", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


@dataclasses.dataclass
class Server:
    """What the handlers share. ``room`` is a callable: inside the operator the store opens
    after the server starts listening (None until then: 503)."""

    room: Callable[[], Strongroom | None]
    reviewer: Reviewer
    limiter: RateLimiter
    max_body_bytes: int = (1 << 20) + 64 * 1024


@dataclasses.dataclass(frozen=True)
class Call:
    """One authorized request, as the handler sees it."""

    request: web.Request
    identity: Identity
    namespace: str
    name: str
    origin: str
    room: Strongroom
    create_only: bool = False  # a set allowed by `create` alone: it may not overwrite

    async def run(self, work: Callable[[], Any]) -> Any:
        """``work`` in a worker thread, with this call's audit origin set."""
        try:
            return await asyncio.to_thread(with_origin, self.origin, work)
        except StrongroomError as exc:
            raise from_store(exc) from None


def _raw_segments(request: web.Request) -> list[str]:
    """The path as the client sent it, refused unless it is in its one true spelling."""
    raw = request.raw_path.partition("?")[0]
    segments = raw.split("/")
    if "%" in raw or "\\" in raw or any(s in {"", ".", ".."} for s in segments[1:]):
        raise ApiError("invalid_path", "the path must be plain: no percent-encoding, no empty, "
                       "'.' or '..' segments")  # fmt: skip
    return segments


def _segment(request: web.Request, index: int, pattern: re.Pattern[str], what: str) -> str:
    """Path segment ``index`` of the raw path, if it is a name of Kubernetes' own shape."""
    raw = _raw_segments(request)
    value = raw[index] if index < len(raw) else ""
    if not pattern.fullmatch(value) or value in {".", ".."}:
        raise ApiError("invalid_path", f"the path's {what} is not a valid Kubernetes name "
                       "(lowercase, no percent-encoding, no '.' or '..' segments)")  # fmt: skip
    return value


def _caller_source(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else ""


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
Verb = str
SET = "create|update"  # a set: create (no version yet) or update, see _decide_set


def _guarded(server: Server, route: str, op: str, verb: Verb, handler: Handler,
             *, named: bool = True) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:  # fmt: skip
    """The handler behind authentication, the rate limit, path checks and authorization."""

    async def guard(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        decision = "none"
        code = 500
        try:
            # Refused authentications are charged to the address they came from, so that no
            # one sends the apiserver unbounded TokenReviews; tokens already known pass.
            refused = f"unauthenticated:{_caller_source(request)}"
            try:
                identity = await server.reviewer.authenticate(
                    request.headers.get("Authorization"),
                    before_review=lambda: server.limiter.check(refused),
                )
            except ApiError as exc:
                if exc.code == "unauthenticated":
                    server.limiter.spend(refused)
                raise
            server.limiter.take(identity.uid or identity.username)
            namespace = _segment(request, 3, _NAMESPACE, "namespace")
            name = _segment(request, 5, _NAME, "secret name") if named else ""
            room = server.room()
            if room is None:
                raise ApiError("unavailable", "the store is not open yet; retry shortly")  # noqa: TRY301
            create_only = False
            if verb == SET:
                answer, create_only = await _decide_set(server, identity, room, namespace, name)
            else:
                answer = await server.reviewer.authorize(identity, verb, namespace, name)
            source = _caller_source(request)
            decision = "allowed" if answer.allowed else "denied"
            if not answer.allowed:
                await _deny(room, identity, source, answer, op)
            call = Call(request, identity, namespace, name, origin(identity, source, answer), room,
                        create_only)  # fmt: skip
            result = await handler(call)
            code = result.status
            return result
        except ApiError as exc:
            code = exc.status
            raise
        finally:
            REQUESTS.labels(route, str(code), decision).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)

    return guard


async def _deny(
    room: Strongroom, identity: Identity, source: str, answer: Decision, op: str
) -> NoReturn:
    """Audit the refusal (with the right that was missing), then refuse: 403."""
    event = AuditEvent(
        time=datetime.now(UTC),
        actor=clip(validate.printable(identity.username)),
        action=f"api.{op}",
        outcome=Outcome.DENIED,
        namespace=answer.namespace,
        name=answer.name,
        detail=clip(f"needs {answer.right}"),
        origin=origin(identity, source, answer),
    )
    try:
        await asyncio.to_thread(room.record, event)
    except StrongroomError as exc:
        raise from_store(exc) from None
    raise ApiError("forbidden", f"{identity.username} may not do this: it needs {answer.right}")


async def _decide_set(
    server: Server, identity: Identity, room: Strongroom, namespace: str, name: str
) -> tuple[Decision, bool]:
    """A set is ``create`` when the secret has no version and ``update`` when it has one.

    Both rights are asked first, before the store is read: a caller with neither learns
    nothing of whether the secret exists (403 "create or update"). With one of them, the store
    says which is needed; a set allowed by ``create`` alone is written only if the secret is
    still absent then (``if_absent``), so a race cannot turn it into an overwrite (409).
    Returns the decision and whether the write must be create-only.
    """
    creating = await server.reviewer.authorize(identity, "create", namespace, name)
    updating = await server.reviewer.authorize(identity, "update", namespace, name)
    if creating.allowed and updating.allowed:
        return updating, False
    if not creating.allowed and not updating.allowed:
        return dataclasses.replace(creating, verb="create or update"), False
    try:
        await asyncio.to_thread(room.history, namespace, name)
        exists = True
    except NotFound:
        exists = False
    except StrongroomError as exc:
        raise from_store(exc) from None
    if exists:
        return updating, False
    return creating, True


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError("unsupported_media_type", "the body must be application/json")
    raw = await request.read()  # bounded by the application's client_max_size (413)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError("invalid", "the body is not JSON (UTF-8)") from None
    except ValueError:  # e.g. an integer past Python's digit limit: not a value to store
        raise ApiError("invalid", "the body holds a number too large to read") from None
    except RecursionError:
        raise ApiError("invalid", "the body nests objects or lists too deeply") from None


def _fields(body: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("invalid", "the body must be a JSON object")
    if set(body) - allowed:  # the unknown names are not repeated: one may be a value
        raise ApiError("invalid", f"the body may hold only {', '.join(sorted(allowed))}")
    return body


def _version(request: web.Request) -> int | None:
    if set(request.query) - {"version"}:
        raise ApiError("invalid", "the only query parameter is version")
    text = request.query.get("version")
    if text is None:
        return None
    if not text.isdigit() or not 0 < int(text) < 1 << 31:
        raise ApiError("invalid", "version must be a positive whole number")
    return int(text)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(doc, ensure_ascii=False),
                        content_type="application/json")  # fmt: skip


# -- handlers ---------------------------------------------------------------------------------


def _setter(replace: bool) -> Handler:
    async def handle(call: Call) -> web.StreamResponse:
        body = _fields(await _json_body(call.request), {"data", "unset", "description"})
        data = body.get("data", {})
        unset = body.get("unset", [])
        description = body.get("description")
        if not isinstance(data, dict):
            raise ApiError("invalid", "data must be an object of KEY: value")
        if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
            raise ApiError("invalid", "unset must be a list of key names")
        if description is not None and not isinstance(description, str):
            raise ApiError("invalid", "description must be a string")
        version = await call.run(lambda: call.room.set(
            call.namespace, call.name, data, remove=unset, replace=replace,
            if_absent=call.create_only, description=description,
            actor=call.identity.username))  # fmt: skip
        return _json({"namespace": call.namespace, "name": call.name, "version": version})

    return handle


async def _get(call: Call) -> web.StreamResponse:
    version = _version(call.request)
    key = _segment(call.request, 7, _KEY, "key") if "key" in call.request.match_info else None
    secret = await call.run(lambda: call.room.get(
        call.namespace, call.name, key, version=version, actor=call.identity.username))  # fmt: skip
    doc: dict[str, Any] = {"namespace": secret.namespace, "name": secret.name,
                           "version": secret.version}  # fmt: skip
    if key is not None:
        doc |= {"key": key, "value": secret.data[key]}
    else:
        doc |= {"description": secret.description, "data": dict(secret.data)}
    return _json(doc)


async def _list(call: Call) -> web.StreamResponse:
    if call.request.query:
        raise ApiError("invalid", "listing takes no query parameters")
    infos = await call.run(lambda: call.room.list(call.namespace, actor=call.identity.username))
    items = [{"namespace": i.namespace, "name": i.name, "version": i.version,
              "keys": dict.fromkeys(i.keys, MASK), "description": i.description,
              "updatedAt": i.updated_at.isoformat()} for i in infos]  # fmt: skip
    return _json({"items": items})


async def _history(call: Call) -> web.StreamResponse:
    rows = await call.run(lambda: call.room.history(call.namespace, call.name))
    event = AuditEvent(time=datetime.now(UTC), actor=clip(validate.printable(call.identity.username)),
                       action="api.history", outcome=Outcome.OK, namespace=call.namespace,
                       name=call.name, origin=call.origin)  # fmt: skip
    await call.run(lambda: call.room.record(event))
    items = [{"version": v, "state": state, "createdBy": by, "createdAt": at.isoformat()}
             for v, state, by, at in rows]  # fmt: skip
    return _json({"items": items})


async def _verify(call: Call) -> web.StreamResponse:
    body = _fields(await _json_body(call.request), {"key", "value"})
    key = body.get("key")
    if not isinstance(key, str) or "value" not in body:
        raise ApiError("invalid", 'verify needs {"key": NAME, "value": candidate}')
    match = await call.run(lambda: call.room.verify(
        call.namespace, call.name, key, body["value"], actor=call.identity.username))  # fmt: skip
    return _json({"match": bool(match)})


async def _delete(call: Call) -> web.StreamResponse:
    version = await call.run(lambda: call.room.delete(call.namespace, call.name,
                                                      actor=call.identity.username))  # fmt: skip
    return _json({"namespace": call.namespace, "name": call.name, "version": version})


# -- the application --------------------------------------------------------------------------


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every refusal as JSON (errors.py); an unexpected failure is logged by type only."""
    try:
        return await handler(request)
    except ApiError as exc:
        return response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        REQUESTS.labels("unmatched", str(exc.status), "none").inc()
        return response(from_http(exc))
    except Exception as exc:  # noqa: BLE001 - the last line: no traceback text, no values
        log.error("values API: unexpected %s", type(exc).__name__)  # noqa: TRY400 - no text
        return response(ApiError("internal", "the request failed"))


def application(server: Server) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=server.max_body_bytes)
    one = f"{BASE}/{{name}}"
    table: list[tuple[str, str, str, str, Verb, Handler, bool]] = [
        ("GET", BASE, BASE, "list", "list", _list, False),
        ("GET", one, one, "get", "get", _get, True),
        ("GET", f"{one}/keys/{{key}}", f"{one}/keys/{{key}}", "get", "get", _get, True),
        ("PATCH", one, one, "set", SET, _setter(replace=False), True),
        ("PUT", one, one, "set", SET, _setter(replace=True), True),
        ("DELETE", one, one, "delete", "delete", _delete, True),
        ("GET", f"{one}/history", f"{one}/history", "history", "list", _history, True),
        ("POST", f"{one}/verify", f"{one}/verify", "verify", "verify", _verify, True),
    ]
    for method, path, route, op, verb, handler, named in table:
        app.router.add_route(method, path, _guarded(server, f"{method} {route}", op, verb,
                                                    handler, named=named))  # fmt: skip
    app.router.add_get("/healthz", _healthz(server))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    return app


def _healthz(server: Server) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def healthz(_request: web.Request) -> web.StreamResponse:
        if server.room() is None:
            return _json({"status": "starting"}, status=503)
        return _json({"status": "ok"})

    return healthz


async def _metrics(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _openapi(_request: web.Request) -> web.StreamResponse:
    return _json(openapi.document())
