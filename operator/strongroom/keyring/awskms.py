"""The ``awskms`` KEK: a symmetric AWS KMS key, reached with boto3.

Seeds are wrapped with ``Encrypt`` under an encryption context ``{"strongroom:data_key_id":
<id>}``, so a wrapped seed moved to another data key row does not decrypt and every KMS audit
record in CloudTrail names the data key. ``kek_id`` is the key's ARN (resolved once with
``DescribeKey`` when an alias or bare id is configured), so rows stay readable after aliases
move. Credentials, region and endpoint come from boto3's standard chain (environment, shared
config, IRSA web identity, instance roles; ``AWS_ENDPOINT_URL`` for a local endpoint).

Transient failures (throttling, 5xx, connection errors) are retried by botocore's ``standard``
retry mode; what remains is mapped once to a :class:`WrapError` / :class:`UnwrapError` naming
the provider, the key and the cause, never the response body.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from strongroom.errors import ConfigError, KeyringError, UnwrapError, WrapError
from strongroom.keyring.base import WrappedSeed
from strongroom.metrics import KEK_ERRORS, kek_call

PROVIDER = "awskms"
T = TypeVar("T")

_CAUSES = {
    "AccessDeniedException": "access denied",
    "DisabledException": "the key is disabled",
    "KMSInvalidStateException": "the key is not usable (pending deletion or import)",
    "NotFoundException": "the key does not exist",
    "InvalidCiphertextException": "the wrapped seed does not match this key or context",
    "IncorrectKeyException": "the seed was wrapped by a different KMS key",
    "ThrottlingException": "throttled by KMS",
    "LimitExceededException": "throttled by KMS",
    "KMSInternalException": "KMS internal error",
    "DependencyTimeoutException": "KMS timed out",
    "UnrecognizedClientException": "the AWS credentials are not valid",
    "InvalidSignatureException": "the AWS credentials are not valid",
    "ExpiredTokenException": "the AWS credentials have expired",
}


@dataclasses.dataclass(frozen=True)
class AwsKmsConfig:
    """How to reach KMS; ``client`` is injected in tests or built from boto3's chain."""

    key_id: str
    """Key id, key ARN, alias name (``alias/x``) or alias ARN."""
    client: Any = None
    region: str | None = None
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 10.0

    def build_client(self) -> Any:
        if self.client is not None:
            return self.client
        config = Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )
        try:
            return boto3.session.Session().client("kms", region_name=self.region, config=config)
        except NoRegionError:
            raise ConfigError(
                "awskms: no AWS region configured (set AWS_DEFAULT_REGION)"
            ) from None


class AwsKmsKeyring:
    """Wrap and unwrap data key seeds with one KMS key."""

    def __init__(self, config: AwsKmsConfig) -> None:
        self._config = config
        self._client = config.build_client()
        self._arn: str | None = (
            config.key_id
            if config.key_id.startswith("arn:aws:kms:") and (":key/" in config.key_id)
            else None
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AwsKmsKeyring(key={self._config.key_id!r})"

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def kek_id(self) -> str:
        """The key ARN; one DescribeKey call the first time an alias or bare id is used."""
        if self._arn is None:
            with self._lock:
                if self._arn is None:
                    meta = self._call(
                        "describe",
                        lambda: self._client.describe_key(KeyId=self._config.key_id),
                        WrapError,
                    )
                    self._arn = str(meta["KeyMetadata"]["Arn"])
        return self._arn

    def wrap(self, *, seed: bytes, context: Mapping[str, str]) -> WrappedSeed:
        key = self.kek_id
        response = self._call(
            "wrap",
            lambda: self._client.encrypt(
                KeyId=key, Plaintext=seed, EncryptionContext=_context(context)
            ),
            WrapError,
        )
        return WrappedSeed(PROVIDER, str(response["KeyId"]), "", bytes(response["CiphertextBlob"]))

    def unwrap(self, *, wrapped: WrappedSeed, context: Mapping[str, str]) -> bytes:
        response = self._call(
            "unwrap",
            lambda: self._client.decrypt(
                CiphertextBlob=wrapped.ciphertext,
                KeyId=wrapped.kek_id,
                EncryptionContext=_context(context),
            ),
            UnwrapError,
        )
        return bytes(response["Plaintext"])

    def _call(self, op: str, call: Callable[[], T], error: type[KeyringError]) -> T:
        try:
            with kek_call(PROVIDER, op):
                return call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            cause = _CAUSES.get(code, "request refused")
            KEK_ERRORS.labels(PROVIDER, op, code).inc()
            raise error(
                f"awskms: cannot {op} with {self._config.key_id}: {cause} ({code})"
            ) from None
        except NoCredentialsError:
            KEK_ERRORS.labels(PROVIDER, op, "NoCredentials").inc()
            raise error(f"awskms: cannot {op}: no AWS credentials found") from None
        except BotoConnectionError as exc:
            KEK_ERRORS.labels(PROVIDER, op, "Unreachable").inc()
            raise error(
                f"awskms: cannot {op} with {self._config.key_id}: KMS endpoint unreachable "
                f"({type(exc).__name__})"
            ) from None
        except BotoCoreError as exc:
            KEK_ERRORS.labels(PROVIDER, op, type(exc).__name__).inc()
            raise error(f"awskms: cannot {op}: {type(exc).__name__}") from None


def _context(context: Mapping[str, str]) -> dict[str, str]:
    return {f"strongroom:{k}": v for k, v in sorted(context.items())}
