"""The ``vault`` KEK: a key in Vault's (or OpenBao's) transit engine, reached with hvac.

Seeds are wrapped with ``transit/encrypt/<key>`` using ``associated_data`` = the data key id, so
a wrapped seed moved to another row does not decrypt. ``kek_id`` is ``<mount>/<key>``; the
transit key version that wrapped a seed (the ``N`` in ``vault:vN:``) is recorded as
``kek_version`` so ``strongroom kek rotate`` can move old seeds onto the latest version after
``transit/keys/<key>/rotate``.

Authentication: ``VAULT_TOKEN``, or Kubernetes auth (``VAULT_K8S_ROLE`` with the projected
service-account token at ``VAULT_K8S_TOKEN_PATH``, mount ``VAULT_K8S_MOUNT``); the namespace
comes from ``VAULT_NAMESPACE``. Transient failures (connection errors, 5xx, 429, sealed or
standby servers) are retried with backoff; what remains becomes one clear error.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hvac_errors

from strongroom.errors import ConfigError, KeyringError, UnwrapError, WrapError
from strongroom.keyring.base import WrappedSeed, context_bytes, retry_transient
from strongroom.metrics import KEK_ERRORS, kek_call

PROVIDER = "vault"
DEFAULT_SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class VaultConfig:
    """Where and how to reach transit; ``client`` is injected in tests or built here."""

    key: str
    addr: str = ""
    token: str = dataclasses.field(default="", repr=False)
    namespace: str | None = None
    mount: str = "transit"
    k8s_role: str | None = None
    k8s_mount: str = "kubernetes"
    k8s_token_path: str = DEFAULT_SA_TOKEN
    timeout: float = 10.0
    attempts: int = 5
    client: Any = None

    @classmethod
    def from_env(cls, key: str, environ: Mapping[str, str] | None = None) -> VaultConfig:
        env = os.environ if environ is None else environ
        addr = env.get("VAULT_ADDR", "")
        if not addr:
            raise ConfigError("STRONGROOM_KEK=vault:… needs VAULT_ADDR (e.g. https://vault:8200)")
        mount = env.get("STRONGROOM_VAULT_TRANSIT_MOUNT", "transit").strip("/") or "transit"
        if "/" in key:
            mount, _, key = key.rpartition("/")
        return cls(
            key=key,
            addr=addr,
            token=env.get("VAULT_TOKEN", ""),
            namespace=env.get("VAULT_NAMESPACE") or None,
            mount=mount,
            k8s_role=env.get("VAULT_K8S_ROLE") or None,
            k8s_mount=env.get("VAULT_K8S_MOUNT", "kubernetes"),
            k8s_token_path=env.get("VAULT_K8S_TOKEN_PATH", DEFAULT_SA_TOKEN),
        )

    def build_client(self) -> Any:
        if self.client is not None:
            return self.client
        client = hvac.Client(url=self.addr, token=self.token or None, namespace=self.namespace,
                             timeout=self.timeout)  # fmt: skip
        if self.k8s_role:
            try:
                jwt = Path(self.k8s_token_path).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"vault: cannot read the service-account token {self.k8s_token_path}: "
                    f"{exc.strerror}"
                ) from None
            try:
                client.auth.kubernetes.login(
                    role=self.k8s_role, jwt=jwt, mount_point=self.k8s_mount
                )
            except (hvac_errors.VaultError, requests.RequestException) as exc:
                raise ConfigError(
                    f"vault: Kubernetes login as role {self.k8s_role!r} failed: {_cause(exc)}"
                ) from None
        elif not self.token:
            raise ConfigError("vault: set VAULT_TOKEN, or VAULT_K8S_ROLE for Kubernetes auth")
        return client


class VaultTransitKeyring:
    """Wrap and unwrap data key seeds with one transit key."""

    def __init__(self, config: VaultConfig) -> None:
        self._config = config
        self._client = config.build_client()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VaultTransitKeyring(key={self.kek_id!r})"

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def kek_id(self) -> str:
        return f"{self._config.mount}/{self._config.key}"

    def wrap(self, *, seed: bytes, context: Mapping[str, str]) -> WrappedSeed:
        response = self._call(
            "wrap",
            lambda: self._client.secrets.transit.encrypt_data(
                name=self._config.key,
                plaintext=base64.b64encode(seed).decode(),
                associated_data=_ad(context),
                mount_point=self._config.mount,
            ),
            WrapError,
        )
        ciphertext = str(response["data"]["ciphertext"])
        return WrappedSeed(PROVIDER, self.kek_id, _version(ciphertext), ciphertext.encode())

    def unwrap(self, *, wrapped: WrappedSeed, context: Mapping[str, str]) -> bytes:
        response = self._call(
            "unwrap",
            lambda: self._client.secrets.transit.decrypt_data(
                name=self._config.key,
                ciphertext=wrapped.ciphertext.decode("ascii", errors="replace"),
                associated_data=_ad(context),
                mount_point=self._config.mount,
            ),
            UnwrapError,
        )
        return base64.b64decode(response["data"]["plaintext"])

    def latest_version(self) -> str:
        """The transit key's newest version (after ``transit/keys/<key>/rotate``)."""
        response = self._call(
            "describe",
            lambda: self._client.secrets.transit.read_key(
                name=self._config.key, mount_point=self._config.mount
            ),
            WrapError,
        )
        return str(response["data"]["latest_version"])

    def _call(self, op: str, call: Callable[[], T], error: type[KeyringError]) -> T:
        try:
            with kek_call(PROVIDER, op):
                return retry_transient(
                    call, is_transient=_transient, attempts=self._config.attempts
                )
        except (hvac_errors.VaultError, requests.RequestException) as exc:
            KEK_ERRORS.labels(PROVIDER, op, type(exc).__name__).inc()
            raise error(
                f"vault: cannot {op} with transit key {self.kek_id}: {_cause(exc)}"
            ) from None


def _ad(context: Mapping[str, str]) -> str:
    return base64.b64encode(context_bytes(context)).decode()


def _version(ciphertext: str) -> str:
    parts = ciphertext.split(":")
    if len(parts) >= 3 and parts[0] == "vault" and parts[1].startswith("v"):
        return parts[1][1:]
    return ""


def _transient(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            hvac_errors.InternalServerError,
            hvac_errors.VaultDown,
            hvac_errors.BadGateway,
            hvac_errors.RateLimitExceeded,
        ),
    )


def _cause(exc: BaseException) -> str:  # noqa: PLR0911 - one line per cause
    if isinstance(exc, hvac_errors.VaultDown):
        return "Vault is sealed or down"
    if isinstance(exc, hvac_errors.Forbidden):
        return "permission denied (check the token's policy for this transit key)"
    if isinstance(exc, hvac_errors.Unauthorized):
        return "not authenticated (token missing or expired)"
    if isinstance(exc, hvac_errors.InvalidPath):
        return "no such transit key or mount"
    if isinstance(exc, hvac_errors.RateLimitExceeded):
        return "rate limited"
    if isinstance(exc, hvac_errors.InvalidRequest):
        return "request refused (wrong key, associated data or ciphertext)"
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return "Vault unreachable"
    if isinstance(exc, hvac_errors.VaultError):
        return f"Vault error ({type(exc).__name__})"
    return type(exc).__name__
