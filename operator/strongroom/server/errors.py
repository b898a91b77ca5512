"""Errors of the values API: JSON with a stable code, never a value.

Every refusal is ``{"error": {"code": CODE, "message": TEXT}}`` with the HTTP status below.
Clients branch on ``code`` (stable); ``message`` is for people. Messages come from
:class:`strongroom.errors.StrongroomError` (whose messages name secrets, keys and sizes, never a
value) or are fixed strings here: nothing a caller sent is echoed, so a value typed in the
wrong field cannot come back in an error, a proxy's log or a bug report.
"""

from __future__ import annotations

import json

from aiohttp import web

from strongroom.errors import (
    AlreadyExists,
    AuditError,
    IntegrityError,
    KeyringError,
    NamespaceMismatch,
    NotFound,
    StoreError,
    StrongroomError,
    ValidationError,
)

# code -> HTTP status. Adding a code is an API change; renaming one breaks clients.
CODES: dict[str, int] = {
    "invalid": 400,
    "invalid_path": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal": 500,
    "integrity": 500,
    "unavailable": 503,
}


class ApiError(Exception):
    """A refusal with a stable code; ``message`` must never carry anything the caller sent."""

    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = CODES[code]
        self.message = message
        self.headers = headers or {}


def from_store(exc: StrongroomError) -> ApiError:
    """The API's error for a store error (its message never holds a value)."""
    for kind, code in (
        (ValidationError, "invalid"),
        (NotFound, "not_found"),
        (AlreadyExists, "conflict"),
        (NamespaceMismatch, "conflict"),
        (IntegrityError, "integrity"),
        (AuditError, "unavailable"),
        (StoreError, "unavailable"),
        (KeyringError, "unavailable"),
    ):
        if isinstance(exc, kind):
            return ApiError(code, str(exc))
    return ApiError("internal", "the request failed")


def from_http(exc: web.HTTPException) -> ApiError:
    """aiohttp's own refusals (body too large, no such route…), in the API's format."""
    by_status = {404: "not_found", 405: "method_not_allowed", 413: "too_large",
                 415: "unsupported_media_type"}  # fmt: skip
    code = by_status.get(exc.status, "invalid" if 400 <= exc.status < 500 else "internal")
    return ApiError(code, exc.reason or code)


def response(error: ApiError) -> web.Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return web.Response(status=error.status, text=json.dumps(body),
                        content_type="application/json", headers=error.headers)  # fmt: skip
