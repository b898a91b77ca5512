"""``strongroom --server URL …``: the CLI's secret commands through the values API.

Tenants and pipelines get no database URL and no KEK: they call the values API
(:mod:`strongroom.server`) with a Kubernetes token, and the cluster's RBAC decides. This module
is the CLI's side: :class:`RemoteStrongroom` has the methods of :class:`strongroom.api.Strongroom`
that the ``secret`` commands use (``set``, ``get``, ``list``, ``verify``, ``history``,
``delete``), with the same return types, so the commands print exactly what direct mode prints.

Credentials, first found wins:

1. ``--token-file PATH`` (e.g. a projected ServiceAccount token with audience ``strongroom``,
   in CI), read on every call, so a token the kubelet rotates is picked up;
2. with ``--kubeconfig-token`` only, the kubeconfig's user (``KUBECONFIG`` or
   ``~/.kube/config``), loaded by the kubernetes client: a token, or an exec plugin's (``aws eks
   get-token``, ``gke-gcloud-auth-plugin``…). Such tokens are made for the apiserver (and often
   an administrator's): never sent unasked to whatever ``--server`` names, and the server
   accepts them only when started with ``--accept-default-audiences``.

Redirects are refused: one would carry the token wherever it points.

The server's certificate is verified against ``--ca-file`` (the chart publishes its CA in the
ConfigMap ``<release>-api-ca``), or the system's trust store.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from strongroom.api import SecretInfo, SecretValue
from strongroom.errors import (
    AlreadyExists,
    ConfigError,
    IntegrityError,
    NotFound,
    StrongroomError,
    ValidationError,
)

ENV_SERVER = "STRONGROOM_SERVER"
ENV_KUBECONFIG_TOKEN = "STRONGROOM_KUBECONFIG_TOKEN"  # noqa: S105 - a variable name
TIMEOUT_SECONDS = 30.0
_ERRORS: dict[str, type[StrongroomError]] = {
    "invalid": ValidationError,
    "invalid_path": ValidationError,
    "not_found": NotFound,
    "conflict": AlreadyExists,
    "integrity": IntegrityError,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The global flags of server mode (the CLI calls this once)."""
    parser.add_argument("--server", metavar="URL",
                        help=f"use the values API at URL instead of the store (also {ENV_SERVER})")  # fmt: skip
    parser.add_argument("--token-file", metavar="PATH",
                        help="with --server: a bearer token file (or --kubeconfig-token)")  # fmt: skip
    parser.add_argument("--ca-file", metavar="PATH",
                        help="with --server: CA certificates to verify the server with")  # fmt: skip
    parser.add_argument("--kubeconfig-token", action="store_true",
                        help="with --server and no --token-file: send the kubeconfig user's token "
                             "(made for the apiserver) to the server; only to a server you trust "
                             f"with it (also {ENV_KUBECONFIG_TOKEN}=true)")  # fmt: skip


def server_of(args: argparse.Namespace) -> str | None:
    """The server to use, or None for direct mode."""
    server = getattr(args, "server", None) or os.environ.get(ENV_SERVER) or None
    if server is None and (getattr(args, "token_file", None) or getattr(args, "ca_file", None)):
        raise ConfigError(f"--token-file and --ca-file go with --server (or {ENV_SERVER})")
    return server


def connect(args: argparse.Namespace, server: str) -> RemoteStrongroom:
    if not server.startswith("https://"):
        raise ConfigError("--server must be an https:// URL: the API speaks TLS only")
    if args.database_url is not None or getattr(args, "kek", None):
        raise ConfigError("--server and --database-url/--kek are two modes: give one")
    try:
        context = ssl.create_default_context(cafile=args.ca_file)
    except (OSError, ssl.SSLError):
        raise ConfigError(f"--ca-file: cannot load {args.ca_file}") from None
    kubeconfig = bool(getattr(args, "kubeconfig_token", False)) or (
        os.environ.get(ENV_KUBECONFIG_TOKEN, "").strip().lower() in {"1", "true", "yes"}
    )
    if not args.token_file and not kubeconfig:
        # The kubeconfig's token opens the apiserver (often as an administrator): a server
        # named by a stray STRONGROOM_SERVER or a typo must not receive it unasked.
        raise ConfigError(
            f"--server {server}: give --token-file (a token with audience strongroom), or "
            "--kubeconfig-token to send your kubeconfig's token to this server"
        )
    return RemoteStrongroom(server.rstrip("/"), context, token_file=args.token_file)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects: a redirect (perhaps to http://, or another host) would carry
    the bearer token wherever it points, so it is refused as the error it is."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirects)


class RemoteStrongroom:
    """The ``secret`` commands' view of a store, through the values API."""

    def __init__(self, url: str, context: ssl.SSLContext, *, token_file: str | None) -> None:
        self.url = url
        self.context = context
        self.token_file = token_file

    def __enter__(self) -> RemoteStrongroom:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> NoReturn:
        raise ConfigError("with --server only secret set, get, list, verify, history and delete "
                          "are available; this command needs direct access to the store")  # fmt: skip

    # -- the secret commands' calls -------------------------------------------------------------

    def set(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, Any],
        *,
        remove: Iterable[str] = (),
        replace: bool = False,
        description: str | None = None,
    ) -> int:
        body: dict[str, Any] = {"data": dict(data), "unset": list(remove)}
        if description is not None:
            body["description"] = description
        doc = self._call("PUT" if replace else "PATCH", _path(namespace, name), body)
        return int(doc["version"])

    def get(
        self, namespace: str, name: str, key: str | None = None, *, version: int | None = None
    ) -> SecretValue:
        path = _path(namespace, name) + ("" if key is None else f"/keys/{_quote(key)}")
        doc = self._call("GET", path + ("" if version is None else f"?version={version}"))
        data = doc["data"] if key is None else {key: doc["value"]}
        return SecretValue(doc["namespace"], doc["name"], int(doc["version"]), data,
                           doc.get("description", ""))  # fmt: skip

    def list(self, namespace: str | None = None) -> list[SecretInfo]:
        if namespace is None:
            raise ValidationError("with --server, secret list needs a namespace")
        doc = self._call("GET", f"/v1/namespaces/{_quote(namespace)}/secrets")
        return [
            SecretInfo(
                item["namespace"],
                item["name"],
                int(item["version"]),
                tuple(item["keys"]),
                item["description"],
                datetime.fromisoformat(item["updatedAt"]),
            )
            for item in doc["items"]
        ]

    def verify(self, namespace: str, name: str, key: str, candidate: Any) -> bool:
        doc = self._call("POST", _path(namespace, name) + "/verify",
                         {"key": key, "value": candidate})  # fmt: skip
        return bool(doc["match"])

    def history(self, namespace: str, name: str) -> builtins.list[tuple[int, str, str, datetime]]:
        doc = self._call("GET", _path(namespace, name) + "/history")
        return [(int(i["version"]), i["state"], i["createdBy"],
                 datetime.fromisoformat(i["createdAt"])) for i in doc["items"]]  # fmt: skip

    def delete(self, namespace: str, name: str) -> int:
        return int(self._call("DELETE", _path(namespace, name))["version"])

    # -- transport ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json",
                   "Content-Type": "application/json"}  # fmt: skip
        request = urllib.request.Request(  # noqa: S310 - connect() admits https:// only
            self.url + path, data=data, method=method, headers=headers
        )
        try:
            opened = _opener(self.context).open(request, timeout=TIMEOUT_SECONDS)
            with opened as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            _refused(exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StrongroomError(f"cannot reach the server {self.url}: {reason}") from None

    def _token(self) -> str:
        if self.token_file:
            try:
                token = Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"--token-file: cannot read {self.token_file}: "
                                  f"{exc.strerror}") from None  # fmt: skip
            if not token:
                raise ConfigError(f"--token-file: {self.token_file} is empty")
            return token
        return kubeconfig_token()


def kubeconfig_token() -> str:
    """The bearer token of the kubeconfig's current user (exec plugins run by the client)."""
    try:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config
    except ImportError:
        raise ConfigError("the kubeconfig needs the kubernetes client (pip install "
                          "'strongroom[operator]'), or give --token-file") from None  # fmt: skip
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(client_configuration=configuration)
    except (k8s_config.ConfigException, OSError) as exc:
        raise ConfigError(f"no kubeconfig credentials: {exc}; give --token-file") from None
    # "Bearer TOKEN" under BearerToken (kubernetes 36); the hook refreshes an expired exec token.
    header = str(configuration.get_api_key_with_prefix("BearerToken", alias="authorization") or "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ConfigError("the kubeconfig's user has no bearer token (client certificates "
                          "cannot be sent to the values API); give --token-file")  # fmt: skip
    return token


def _refused(exc: urllib.error.HTTPError) -> NoReturn:
    try:
        error = json.loads(exc.read())["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        raise StrongroomError(f"the server answered HTTP {exc.code}") from None
    raise _ERRORS.get(code, StrongroomError)(message if code in _ERRORS else f"{code}: {message}")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _path(namespace: str, name: str) -> str:
    return f"/v1/namespaces/{_quote(namespace)}/secrets/{_quote(name)}"
