"""The OpenAPI 3.1 document served at ``/openapi.json``, built from one table of operations."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_NS = {"name": "ns", "in": "path", "required": True, "schema": {"type": "string"}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "query", "schema": {"type": "integer", "minimum": 1}}
_SET_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "data": {"type": "object", "description": "KEY: value (JSON: string, number, object, list)"},
    "unset": {"type": "array", "items": {"type": "string"}},
    "description": {"type": "string"}}}  # fmt: skip
_VERIFY_BODY = {"type": "object", "required": ["key", "value"], "additionalProperties": False,
                "properties": {"key": {"type": "string"}, "value": {}}}  # fmt: skip

# path, method, summary, RBAC verb, parameters, request body schema
_OPERATIONS: list[tuple[str, str, str, str, list[Any], Any]] = [
    ("/v1/namespaces/{ns}/secrets", "get", "List names and masked values", "list", [_NS], None),
    (
        "/v1/namespaces/{ns}/secrets/{name}",
        "get",
        "Every key, plaintext",
        "get",
        [_NS, _NAME, _VERSION],
        None,
    ),
    (
        "/v1/namespaces/{ns}/secrets/{name}",
        "patch",
        "Set keys (merged): a new version",
        "create/update",
        [_NS, _NAME],
        _SET_BODY,
    ),
    (
        "/v1/namespaces/{ns}/secrets/{name}",
        "put",
        "Set keys (replacing all): a new version",
        "create/update",
        [_NS, _NAME],
        _SET_BODY,
    ),
    (
        "/v1/namespaces/{ns}/secrets/{name}",
        "delete",
        "Delete every version",
        "delete",
        [_NS, _NAME],
        None,
    ),
    (
        "/v1/namespaces/{ns}/secrets/{name}/keys/{key}",
        "get",
        "One key, plaintext",
        "get",
        [_NS, _NAME, _KEY, _VERSION],
        None,
    ),
    (
        "/v1/namespaces/{ns}/secrets/{name}/history",
        "get",
        "Versions, no values",
        "list",
        [_NS, _NAME],
        None,
    ),
    (
        "/v1/namespaces/{ns}/secrets/{name}/verify",
        "post",
        "Compare a candidate in constant time",
        "verify",
        [_NS, _NAME],
        _VERIFY_BODY,
    ),
]


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, summary, verb, parameters, body in _OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "description": f"Needs `{verb}` on `managedsecrets/values` in `strongroom.io` "
                           "(a SubjectAccessReview for the namespace and name).",
            "parameters": parameters,
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "done"}, **{
                code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
                for code, text in (("400", "invalid"), ("401", "unauthenticated"),
                                   ("403", "forbidden"), ("404", "not found"),
                                   ("413", "too large"), ("429", "rate limited"))}},
        }  # fmt: skip
        if body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": body}}}  # fmt: skip
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Strongroom values API", "version": "v1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a Kubernetes token, audience strongroom"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
    }  # fmt: skip
