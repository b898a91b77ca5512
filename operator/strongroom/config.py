"""Typed settings, read once from ``STRONGROOM_*`` environment variables.

Every variable goes through :func:`_read`, so a malformed value fails fast with the
variable's name in the message and nothing is half-configured. Flags on the command line
override the environment by passing keyword arguments to :meth:`Settings.from_env`.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import os
import re
import shlex
import socket
import stat
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

from strongroom.errors import ConfigError

T = TypeVar("T")

DEFAULT_DATABASE_FILE = "strongroom.db"
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_DATABASE_FILE}"
MASTER_KEY_HEX_LENGTH = 64

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``, ``45s``, ``7d`` (Go-style, plus days) into a timedelta.

    Durations appear in settings and in ManagedSecret specs; one parser keeps them alike.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h30m or 7d")
    return timedelta(seconds=seconds)


def parse_bool(text: str) -> bool:
    """Accept the spellings people actually put in environment variables."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def parse_positive_int(text: str) -> int:
    value = int(text.strip())
    if value <= 0:
        raise ValueError(f"{value} is not a positive integer")
    return value


def parse_master_key(text: str) -> bytes:
    """A master key is exactly 64 hexadecimal characters (32 bytes)."""
    cleaned = text.strip()
    if len(cleaned) != MASTER_KEY_HEX_LENGTH or not re.fullmatch(r"[0-9a-fA-F]+", cleaned):
        raise ValueError(
            f"must be {MASTER_KEY_HEX_LENGTH} hexadecimal characters "
            f"(got {len(cleaned)} characters); generate one with `strongroom keygen`"
        )
    return bytes.fromhex(cleaned)


@dataclasses.dataclass(frozen=True)
class KekSpec:
    """Which key-encryption key new data keys are wrapped with."""

    provider: str
    """``local``, ``awskms`` or ``vault``."""
    key: str
    """The provider's key name: empty for local, a key id/ARN/alias for awskms, a transit key."""

    @classmethod
    def parse(cls, text: str) -> KekSpec:
        text = text.strip()
        if text == "local":
            return cls("local", "")
        provider, sep, key = text.partition(":")
        if provider in {"awskms", "vault"} and sep and key.strip():
            return cls(provider, key.strip())
        raise ValueError(
            f"{text!r} is not a KEK: use `local`, `awskms:<key id, ARN or alias>` "
            "or `vault:<transit key name>`"
        )

    def __str__(self) -> str:
        return self.provider if self.provider == "local" else f"{self.provider}:{self.key}"


def parse_kek_list(text: str) -> tuple[KekSpec, ...]:
    """Comma-separated KEKs, each as STRONGROOM_KEK takes it (``local,awskms:arn:…``)."""
    return tuple(KekSpec.parse(part) for part in text.split(",") if part.strip())


_FACILITY_NAMES = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
                   "cron", "authpriv", "ftp"]  # fmt: skip
SYSLOG_FACILITIES = {name: code for code, name in enumerate(_FACILITY_NAMES)} | {
    f"local{n}": 16 + n for n in range(8)
}
"""RFC 5424 facility codes by name."""

SYSLOG_FRAMINGS = ("octet-counting", "newline")

_SINK_FORMS = "file:/absolute/path, stderr or syslog+tcp://host[:port]"


@dataclasses.dataclass(frozen=True)
class AuditSinkSpec:
    """One place every audit event is also written to (one item of STRONGROOM_AUDIT_SINKS)."""

    kind: str
    """``file``, ``stderr`` or ``syslog+tcp``."""
    path: str = ""
    """file: an absolute path, opened for appending (created 0600)."""
    host: str = ""
    """syslog+tcp: the receiver's host name or address."""
    port: int = 514
    """syslog+tcp: the receiver's port."""
    framing: str = "octet-counting"
    """syslog+tcp: ``octet-counting`` (RFC 6587 3.4.1, ``LEN SP MSG``) or ``newline`` (``MSG LF``);
    rsyslog's imtcp and syslog-ng's syslog() source take the first, every TCP receiver the second."""
    facility: str = "authpriv"
    """syslog+tcp: the RFC 5424 facility (authpriv: security messages, kept from ordinary logs)."""

    @classmethod
    def parse(cls, text: str) -> AuditSinkSpec:
        text = text.strip()
        if text == "stderr":
            return cls("stderr")
        if text == "stdout":
            raise ValueError(
                "stdout is the command line's output channel (`secret get` prints values there, "
                "scripts read it): use stderr, which container runtimes collect like stdout"
            )
        if text.startswith("file:"):
            path = text[len("file:") :]
            if path.startswith("//"):  # file:///var/log/x as well as file:/var/log/x
                path = path[2:]
            if not path.startswith("/") or path.endswith("/"):
                raise ValueError(
                    f"{text!r}: a file sink needs an absolute file path "
                    "(file:/var/log/strongroom/audit.jsonl)"
                )
            return cls("file", path=path)
        if text.startswith("syslog+tcp://"):
            return cls._parse_syslog(text)
        if text.startswith(("syslog:", "syslog+udp:", "syslog+tls:")):
            raise ValueError(
                f"{text!r}: only syslog over TCP is supported (syslog+tcp://host:port)"
            )
        raise ValueError(f"{text!r} is not an audit sink: use {_SINK_FORMS}")

    @classmethod
    def _parse_syslog(cls, text: str) -> AuditSinkSpec:
        try:
            url = urlsplit(text)
            host, port = url.hostname, url.port
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if not host or url.path not in {"", "/"} or url.username or url.fragment:
            raise ValueError(f"{text!r}: write syslog+tcp://host[:port][?framing=…&facility=…]")
        options: dict[str, str] = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True, strict_parsing=False):
            if name not in {"framing", "facility"} or name in options:
                raise ValueError(
                    f"{text!r}: unknown or repeated option {name!r} (framing, facility)"
                )
            options[name] = value
        framing = options.get("framing", "octet-counting")
        if framing not in SYSLOG_FRAMINGS:
            raise ValueError(f"{text!r}: framing must be octet-counting or newline")
        facility = options.get("facility", "authpriv")
        if facility not in SYSLOG_FACILITIES:
            raise ValueError(f"{text!r}: {facility!r} is not a syslog facility (authpriv, local0…)")
        if port == 0:
            raise ValueError(f"{text!r}: port 0 is not a port to send to")
        port = 514 if port is None else port
        return cls("syslog+tcp", host=host, port=port, framing=framing, facility=facility)

    def __str__(self) -> str:
        """The name errors, logs and the metrics' ``sink`` label use."""
        if self.kind == "file":
            return f"file:{self.path}"
        if self.kind == "syslog+tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"syslog+tcp://{host}:{self.port}"
        return self.kind


def parse_audit_sinks(text: str) -> tuple[AuditSinkSpec, ...]:
    """Comma-separated sinks (``file:/var/log/strongroom/audit.jsonl,stderr``), each once."""
    sinks = tuple(AuditSinkSpec.parse(part) for part in text.split(",") if part.strip())
    names = [str(sink) for sink in sinks]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{name} is listed twice")
    return sinks


def _parse_sink_mode(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in {"require", "best-effort"}:
        raise ValueError(f"{text!r} is not a mode (use require or best-effort)")
    return lowered == "require"


@dataclasses.dataclass(frozen=True)
class AuditSinkSettings:
    """Where audit events go besides the ``audit_events`` table (:mod:`strongroom.auditsinks`)."""

    sinks: tuple[AuditSinkSpec, ...] = ()
    """STRONGROOM_AUDIT_SINKS, comma-separated: ``file:/path``, ``stderr``,
    ``syslog+tcp://host[:port][?framing=octet-counting|newline&facility=authpriv]``."""
    require: bool = False
    """STRONGROOM_AUDIT_SINKS_MODE=require: an operation fails, and nothing of it commits, when
    no sink took its events. ``best-effort`` (the default): a sink's failure is logged and
    counted (``strongroom_audit_sink_failures_total``) and the operation goes on."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AuditSinkSettings:
        none: tuple[AuditSinkSpec, ...] = ()
        sinks = _read(env, "STRONGROOM_AUDIT_SINKS", parse_audit_sinks, none)
        require = _read(env, "STRONGROOM_AUDIT_SINKS_MODE", _parse_sink_mode, False)
        if require and not sinks:
            raise ConfigError(
                "STRONGROOM_AUDIT_SINKS_MODE: require needs at least one sink in "
                "STRONGROOM_AUDIT_SINKS"
            )
        return cls(sinks, require)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what the store accepts, so one bad write cannot bloat every sync."""

    max_name_length: int = 253
    """Longest secret name (Kubernetes' limit for object names, 253) or namespace (never more
    than a Kubernetes namespace's 63). A limit above Kubernetes' own has no effect."""
    max_key_length: int = 253
    """Longest key within a secret (Kubernetes' limit for Secret data keys, 253)."""
    max_value_bytes: int = 1 << 20
    """Largest JSON-encoded value; Kubernetes Secrets cannot exceed 1 MiB in total."""
    max_secret_bytes: int = 1 << 20
    """Largest secret: its keys and JSON values together (a Secret holds at most 1 MiB)."""
    max_json_depth: int = 64
    """Deepest nesting of objects and lists in a value."""


@dataclasses.dataclass(frozen=True)
class DataKeyPolicy:
    """When a new data key seed is started (KMS v2 style)."""

    max_uses: int = 1_000_000
    """Value versions encrypted under one seed before a new seed is started."""
    max_age: timedelta = timedelta(days=30)
    """Age after which a seed stops being used for new writes."""


SEALING_SUITES = ("mlkem768-x25519", "x25519")


def parse_sealing_suite(text: str) -> str:
    if text not in SEALING_SUITES:
        raise ValueError(f"must be one of {', '.join(SEALING_SUITES)}")
    return text


@dataclasses.dataclass(frozen=True)
class SealingPolicy:
    """Sealing keys (:mod:`strongroom.sealing`): which suite new ones use and when to rotate."""

    suite: str = "mlkem768-x25519"
    """HPKE suite of new sealing keys (STRONGROOM_SEALING_SUITE): the post-quantum hybrid by
    default; ``x25519`` for tools that cannot do ML-KEM."""
    max_age: timedelta = timedelta(days=90)
    """Age after which the operator starts a new sealing key (STRONGROOM_SEALING_KEY_MAX_AGE),
    and after which a ManagedSecret whose blob uses an older key reports SealedKeyOld."""
    configmap: str = ""
    """Where the operator publishes the public sealing keys (STRONGROOM_SEALING_CONFIGMAP):
    ``NAMESPACE/NAME``, ``NAME`` in POD_NAMESPACE, ``off``; empty: strongroom-sealing-keys in
    POD_NAMESPACE, or nowhere outside a pod."""
    publish_seconds: float = 60.0
    """How often the operator checks the key's age and the ConfigMap
    (STRONGROOM_SEALING_PUBLISH_SECONDS)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything Strongroom needs to open its store and keyring."""

    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL; SQLite by default, ``postgresql+psycopg://…`` in production."""
    kek: KekSpec = dataclasses.field(default_factory=lambda: KekSpec("local", ""))
    """KEK for new data keys (STRONGROOM_KEK)."""
    kek_previous: tuple[KekSpec, ...] = ()
    """Further KEKs stored keys may name while a rotation is under way (STRONGROOM_KEK_PREVIOUS,
    comma-separated, same syntax as STRONGROOM_KEK). A stored key naming a KEK that is neither
    this nor STRONGROOM_KEK is refused as tampering (IntegrityError), and that KEK is never
    called: a row in the database must not choose which KMS key or Vault the process talks to.
    Once ``kek rotate`` has rewrapped every key, the old KEK is no longer needed here."""
    master_key: bytes | None = dataclasses.field(default=None, repr=False)
    """Local KEK material; never printed (repr=False)."""
    actor: str = ""
    """Who the audit log says acted; defaults to user@host."""
    limits: Limits = dataclasses.field(default_factory=Limits)
    data_keys: DataKeyPolicy = dataclasses.field(default_factory=DataKeyPolicy)
    keep_versions: int = 10
    """Versions kept readable per secret; older ones are destroyed (ciphertext erased)."""
    auto_migrate: bool = True
    """Create or upgrade the schema on open (turn off where migrations are a deploy step)."""
    kek_max_attempts: int = 5
    """Tries per KEK call before a transient failure (throttling, unreachable) is an error."""
    audit_sinks: AuditSinkSettings = dataclasses.field(default_factory=AuditSinkSettings)
    """Copies of the audit events outside the database (STRONGROOM_AUDIT_SINKS[_MODE])."""
    sealing: SealingPolicy = dataclasses.field(default_factory=SealingPolicy)
    """Sealing keys' suite and rotation age."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            database_url=_database_url(env),
            kek=_read(env, "STRONGROOM_KEK", KekSpec.parse, KekSpec("local", "")),
            kek_previous=_read(env, "STRONGROOM_KEK_PREVIOUS", parse_kek_list, ()),
            master_key=_master_key(env),
            actor=_read(env, "STRONGROOM_ACTOR", str, "") or _default_actor(),
            limits=Limits(
                max_name_length=_read(env, "STRONGROOM_MAX_NAME_LENGTH", parse_positive_int, 253),
                max_key_length=_read(env, "STRONGROOM_MAX_KEY_LENGTH", parse_positive_int, 253),
                max_value_bytes=_read(
                    env, "STRONGROOM_MAX_VALUE_BYTES", parse_positive_int, 1 << 20
                ),
                max_secret_bytes=_read(
                    env, "STRONGROOM_MAX_SECRET_BYTES", parse_positive_int, 1 << 20
                ),
                max_json_depth=_read(env, "STRONGROOM_MAX_JSON_DEPTH", parse_positive_int, 64),
            ),
            data_keys=DataKeyPolicy(
                max_uses=_read(env, "STRONGROOM_SEED_MAX_USES", parse_positive_int, 1_000_000),
                max_age=_read(env, "STRONGROOM_SEED_MAX_AGE", parse_duration, timedelta(days=30)),
            ),
            keep_versions=_read(env, "STRONGROOM_KEEP_VERSIONS", parse_positive_int, 10),
            auto_migrate=_read(env, "STRONGROOM_AUTO_MIGRATE", parse_bool, True),
            kek_max_attempts=_read(env, "STRONGROOM_KEK_MAX_ATTEMPTS", parse_positive_int, 5),
            audit_sinks=AuditSinkSettings.from_env(env),
            sealing=SealingPolicy(
                suite=_read(env, "STRONGROOM_SEALING_SUITE", parse_sealing_suite,
                            "mlkem768-x25519"),
                max_age=_read(env, "STRONGROOM_SEALING_KEY_MAX_AGE", parse_duration,
                              timedelta(days=90)),
                configmap=_read(env, "STRONGROOM_SEALING_CONFIGMAP", str, ""),
                publish_seconds=float(_read(env, "STRONGROOM_SEALING_PUBLISH_SECONDS",
                                            parse_positive_int, 60)),
            ),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(settings, **clean) if clean else settings  # type: ignore[arg-type]


def _read(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _database_url(env: Mapping[str, str]) -> str:
    """STRONGROOM_DATABASE_URL; set but empty is a mistake, not a request for the default.

    (An empty value used to fall back to ``sqlite:///strongroom.db`` and quietly start a new,
    empty store in the working directory.) The URL's form is checked where the engine is built
    (:func:`strongroom.store.engine.create_store_engine`).
    """
    raw = env.get("STRONGROOM_DATABASE_URL")
    if raw is None:
        return DEFAULT_DATABASE_URL
    if not raw.strip():
        raise ConfigError(
            "STRONGROOM_DATABASE_URL is set but empty: give a URL such as "
            f"sqlite:////var/lib/strongroom/strongroom.db or postgresql://user@host/db, or unset "
            f"it for the default {DEFAULT_DATABASE_URL}"
        )
    return raw.strip()


def missing_default_store(env: Mapping[str, str]) -> str | None:
    """Why the default store cannot be used, or None: no URL is set and ./strongroom.db is absent.

    Opening it would create a new, empty database in the working directory: a command run
    from the wrong directory, or in a shell that lost its STRONGROOM_DATABASE_URL, would then
    read "not found" and write secrets nobody else sees. Only a command asked to create the
    store (``strongroom db upgrade``) may start one there. An explicit URL naming a file that
    does not exist yet is still created: it was asked for.
    """
    if env.get("STRONGROOM_DATABASE_URL") is not None or Path(DEFAULT_DATABASE_FILE).exists():
        return None
    return (
        f"no store at ./{DEFAULT_DATABASE_FILE}; set STRONGROOM_DATABASE_URL or run "
        "strongroom db upgrade"
    )


def _master_key(env: Mapping[str, str]) -> bytes | None:
    inline = env.get("STRONGROOM_MASTER_KEY") or None
    path = env.get("STRONGROOM_MASTER_KEY_FILE") or None
    if inline and path:
        raise ConfigError("set STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE, not both")
    if inline:
        try:
            return parse_master_key(inline)
        except ValueError as exc:
            raise ConfigError(f"STRONGROOM_MASTER_KEY: {exc}") from None
    if path:
        text = read_key_file(path)
        try:
            return parse_master_key(text)
        except ValueError as exc:
            raise ConfigError(f"STRONGROOM_MASTER_KEY_FILE ({path}): {exc}") from None
    return None


def read_key_file(path: str, variable: str = "STRONGROOM_MASTER_KEY_FILE") -> str:
    """The text of a key file, refused when anyone but its owner could read or change it.

    Checked on the open file (``fstat``), so the file read is the file checked. The rule is
    PostgreSQL's for its server key (``ssl_key_file``):

    - a file owned by the user running Strongroom: no permission for group or others
      (0600 or 0400);
    - a file owned by root, read through its group: group read and nothing more (0640 or
      0440). That is how the kubelet hands over a Secret mounted as a volume when the pod sets
      ``fsGroup``: owner root, group the pod's fsGroup, mode ``defaultMode | 0440``. The chart
      sets ``defaultMode: 0400`` and ``fsGroup`` for this. Root itself is held to the first
      rule: a process running as root is never let off with group read;
    - any other owner: refused (someone else controls the key).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        problem = key_file_problem(os.fstat(handle.fileno()), path)
        if problem is not None:
            raise ConfigError(f"{variable}: {problem}")
        raw = handle.read()
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}: cannot read {path}: not ASCII text") from None


def key_file_problem(info: os.stat_result, path: str, euid: int | None = None) -> str | None:
    """Why a key file with this ``stat`` may not be used by ``euid`` (default: this process),
    or None (see :func:`read_key_file`)."""
    if euid is None:
        if not hasattr(os, "geteuid"):  # no POSIX owners or modes to check
            return None
        euid = os.geteuid()
    mode, owner, me = stat.S_IMODE(info.st_mode), info.st_uid, euid
    shown = shlex.quote(path)
    if owner == me:
        if mode & 0o077:
            return (f"{path} is readable or writable by group or others (mode {mode:04o}); "
                    f"run `chmod 600 {shown}`")  # fmt: skip
        return None
    if owner == 0:
        if mode & 0o037:
            return (f"{path} is owned by root with mode {mode:04o}: only its group may read it "
                    f"(0640 or 0440); run `chmod 640 {shown}`, or `chmod 600 {shown}` and "
                    "chown it to the user running Strongroom")  # fmt: skip
        return None
    return (f"{path} is owned by uid {owner}, neither the user running Strongroom (uid {me}) "
            f"nor root; run `chown {me} {shown} && chmod 600 {shown}`")


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def parse_seconds(text: str) -> float:
    value = float(text.strip())
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{text.strip()!r} is not a positive number of seconds")
    return value


@dataclasses.dataclass(frozen=True)
class OperatorTuning:
    """The operator's own knobs (``strongroom run``), validated like every other setting."""

    store_poll_seconds: float = 2.0
    reconcile_workers: int = 16  # reconciles at once
    api_timeout_seconds: float = 70.0  # a Kubernetes API call that has not answered fails
    lease_seconds: float = 15.0  # leader election: a leader silent this long is replaced
    log_format: str = "text"
    # Restart workloads listed in rolloutRestart (the chart grants workload rights only then).
    rollout_restart: bool = True
    # The audit checkpoint: a ConfigMap ``[NAMESPACE/]NAME`` (namespace: POD_NAMESPACE), "off",
    # or "" for strongroom-audit-checkpoint in POD_NAMESPACE (off outside a pod); checked and
    # published every ``audit_checkpoint_seconds`` (1-30 s).
    audit_checkpoint: str = ""
    audit_checkpoint_seconds: float = 30.0
    # Values are bound to their namespace's UID (strongroom.bindings); true: to its name only.
    trust_namespace_names: bool = False
    # data[].database (strongroom.sources.database): off, no DatabaseEngine is read (the chart
    # grants the rights only with databaseEngines.enabled) and database items are refused.
    database_engines: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorTuning:
        env = os.environ if env is None else env
        log_format = _read(env, "STRONGROOM_LOG_FORMAT", _parse_log_format, cls.log_format)
        return cls(
            store_poll_seconds=_read(
                env, "STRONGROOM_STORE_POLL_SECONDS", parse_seconds, cls.store_poll_seconds
            ),
            reconcile_workers=_read(
                env, "STRONGROOM_RECONCILE_WORKERS", parse_positive_int, cls.reconcile_workers
            ),
            api_timeout_seconds=_read(
                env, "STRONGROOM_API_TIMEOUT_SECONDS", parse_seconds, cls.api_timeout_seconds
            ),
            lease_seconds=_read(env, "STRONGROOM_LEASE_SECONDS", _parse_lease, cls.lease_seconds),
            log_format=log_format,
            rollout_restart=_read(env, "STRONGROOM_ROLLOUT_RESTART", parse_bool,
                                  cls.rollout_restart),
            audit_checkpoint=_read(env, "STRONGROOM_AUDIT_CHECKPOINT", str.strip,
                                   cls.audit_checkpoint),
            audit_checkpoint_seconds=_read(env, "STRONGROOM_AUDIT_CHECKPOINT_SECONDS",
                                           _parse_checkpoint_seconds,
                                           cls.audit_checkpoint_seconds),
            trust_namespace_names=_read(env, "STRONGROOM_TRUST_NAMESPACE_NAMES", parse_bool,
                                        cls.trust_namespace_names),
            database_engines=_read(env, "STRONGROOM_DATABASE_ENGINES", parse_bool,
                                   cls.database_engines),
        )


def _parse_lease(text: str) -> float:
    value = parse_seconds(text)
    if not 3 <= value <= 3600:
        raise ValueError(f"{text.strip()!r} is not between 3 s and 1 h")
    return value


def _parse_checkpoint_seconds(text: str) -> float:
    """At least every 30 s (the promise), and no more often than every second (apiserver)."""
    value = parse_seconds(text)
    if not 1 <= value <= 30:
        raise ValueError(f"{text.strip()!r} is not between 1 s and 30 s")
    return value


def _parse_log_format(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in {"text", "json"}:
        raise ValueError(f"{text!r} is not a log format (use text or json)")
    return lowered
