"""The ``strongroom`` command line.

Errors are one line on stderr and a non-zero exit (1: failed, 2: bad usage), never a
traceback (set STRONGROOM_DEBUG=1 to get one for an unexpected failure). Values are printed
only by ``secret get``; everything else shows names, versions and masked values.

Every line printed is made of text passed through :func:`strongroom.validate.printable` (or
JSON escaped the same way): a newline or a terminal escape in a name, an actor, a message or
an audit detail shows as ``\\n`` or ``\\x1b``, so it cannot forge a line of ``audit tail`` or
drive the terminal. The one exception is the value ``secret get`` prints, which is the
secret's own bytes (``--json`` prints it escaped). A usage error names the options and
commands the parser defines, never what was typed where a value may stand (argparse's own
messages quote it: ``unrecognized arguments: --bogus pw=hunter2``).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import secrets as pysecrets
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from strongroom import client, validate, values
from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Checkpoint, Outcome, clip
from strongroom.config import KekSpec, Settings, missing_default_store
from strongroom.errors import ConfigError, StrongroomError, ValidationError
from strongroom.server import flags as server_flags

if TYPE_CHECKING:
    from strongroom.operator.checkpoint import CheckpointRef

MASK = "••••••••"
CHECKPOINT_RESET_ACTION = "audit.checkpoint.reset"

T = TypeVar("T")

Handler = Callable[[argparse.Namespace], int]


class UsageError(StrongroomError):
    """Bad arguments found after parsing (exit 2, like argparse's own)."""


class _BadUsage(Exception):  # noqa: N818 - a signal from the parser to main(), never seen outside
    """argparse found the command line malformed; main() prints it without the typed values."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, except that its errors go to main() to be printed without argument values."""

    def error(self, message: str) -> NoReturn:
        raise _BadUsage(self, message)


def _say(*parts: object, file: Any = None) -> None:
    """Print one line, each part escaped (:func:`strongroom.validate.printable`)."""
    print("".join(validate.printable(part) for part in parts), file=file or sys.stdout)


def _say_json(doc: Any, **options: Any) -> None:
    print(validate.printable_json(json.dumps(doc, ensure_ascii=False, **options)))


def _settings(args: argparse.Namespace, *, create: bool = False) -> Settings:
    """The settings of this run; without ``create``, a default store that is absent is an error
    (:func:`strongroom.config.missing_default_store`), never a new empty database."""
    if args.database_url is not None and not args.database_url.strip():
        raise ConfigError("--database-url is empty: give a URL or leave the flag out")
    if not create and args.database_url is None:
        missing = missing_default_store(os.environ)
        if missing is not None:
            raise ConfigError(missing)
    kek = None
    if getattr(args, "kek", None):
        try:
            kek = KekSpec.parse(args.kek)
        except ValueError as exc:
            raise ConfigError(f"--kek: {exc}") from None
    return Settings.from_env(database_url=args.database_url, kek=kek)


def _open(args: argparse.Namespace) -> Strongroom:
    server = client.server_of(args)
    if server is not None:  # the values API with a Kubernetes token (strongroom.client)
        return cast(Strongroom, client.connect(args, server))  # the secret commands' subset
    return Strongroom.open(_settings(args))


def _ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        # Not echoed: a value typed where the reference belongs must not reach the terminal.
        raise UsageError("the secret must be given as NAMESPACE/NAME (one '/')")
    return namespace, name


# --- keygen / db ---------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    key = pysecrets.token_hex(32)
    if args.out is None:
        print(key)
        return 0
    try:  # created 0600 whatever the umask; never over an existing file (it may be the key)
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)  # fmt: skip
    except OSError as exc:
        raise UsageError(f"--out: cannot create {args.out}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    _say("strongroom: wrote a new master key to ", args.out,
         " (mode 0600); back it up apart from the database", file=sys.stderr)  # fmt: skip
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from strongroom.store import create_store_engine, upgrade

    engine = create_store_engine(_settings(args, create=True).database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        _say(f"database schema already at {after}")
    else:
        _say(f"database schema upgraded from {before or 'empty'} to {after}")
    return 0


# --- secret --------------------------------------------------------------------------------


def _parse_assignments(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for number, item in enumerate(args.assignments, start=1):
        # Errors name the assignment by position, never by its text: it may be the value.
        if ":=" in item and ("=" not in item or item.index(":=") < item.index("=")):
            key, _, raw = item.partition(":=")
            try:
                data[key] = json.loads(raw)
            except json.JSONDecodeError:
                raise UsageError(
                    f"{key}:= needs a JSON value (e.g. {key}:='{{\"a\": 1}}')"
                ) from None
            except RecursionError:  # json's parser recurses; the validator's limit is lower
                raise ValidationError(
                    f"value of key {key!r}: a value nests objects or lists too deeply"
                ) from None
        elif "=" in item:
            key, _, raw = item.partition("=")
            data[key] = _not_empty(raw, key, f"{key}=", args.allow_empty)
        else:
            raise UsageError(f"assignment {number} is not KEY=VALUE or KEY:=JSON (not shown: "
                             "it may be a value)")  # fmt: skip
        if not key:
            raise UsageError(f"assignment {number} has an empty key")
    stdin_for = None
    for item in args.from_file or []:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise UsageError(f"--from-file {item!r} is not KEY=PATH")
        if path == "-":
            if stdin_for is not None:
                raise UsageError(f"--from-file {stdin_for}=- and {key}=-: standard input "
                                 "holds one value")  # fmt: skip
            stdin_for = key
        source = "standard input" if path == "-" else f"file {path}"
        data[key] = _not_empty(_read_text(path, key), key, source, args.allow_empty)
    return data


def _not_empty(text: str, key: str, source: str, allowed: bool) -> str:
    """``text``, unless it is empty (or line breaks only) and --allow-empty was not given.

    An unset shell variable (``pw=$PW``, ``echo "$PW" | … --from-file pw=-``), a pipe whose
    producer failed or an empty file would otherwise replace a secret with nothing, and the
    Secret synced from it would follow. ``KEY:='""'`` is an empty string asked for in JSON and
    is not checked.
    """
    if allowed or text.strip("\r\n"):
        return text
    what = "empty" if not text else "only line breaks"
    raise UsageError(f"the value of {key} ({source}) is {what}; nothing was written (give "
                     "--allow-empty to store it)")  # fmt: skip


def _read_text(path: str, key: str) -> str:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--from-file {key}: cannot read {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"--from-file {key}: {path} is not UTF-8 text") from None


def cmd_secret_set(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    data = _parse_assignments(args)
    with _open(args) as room:
        version = room.set(
            namespace,
            name,
            data,
            remove=args.unset or (),
            replace=args.replace,
            description=args.description,
        )
    _say(namespace, "/", name, f": version {version}")
    return 0


def cmd_secret_get(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    with _open(args) as room:
        secret = room.get(namespace, name, args.key, version=args.version)
    if args.json:
        doc = {
            "namespace": secret.namespace,
            "name": secret.name,
            "version": secret.version,
            "data": dict(secret.data),
        }
        _say_json(doc, indent=2)
    elif args.key is not None:
        text = values.render(secret.data[args.key])
        sys.stdout.write(text + ("\n" if sys.stdout.isatty() else ""))
    else:
        for key, value in secret.data.items():
            print(f"{validate.printable(key)}={values.render(value)}")  # the value as stored
    return 0


def cmd_secret_list(args: argparse.Namespace) -> int:
    with _open(args) as room:
        infos = room.list(args.namespace)
    if args.json:
        doc = [
            {
                "namespace": info.namespace,
                "name": info.name,
                "version": info.version,
                "keys": dict.fromkeys(info.keys, MASK),
                "description": info.description,
                "updatedAt": info.updated_at.isoformat(),
            }
            for info in infos
        ]
        _say_json(doc, indent=2)
        return 0
    if not infos:
        print("no secrets", file=sys.stderr)
        return 0
    refs = [validate.printable(f"{i.namespace}/{i.name}") for i in infos]
    width = max(len(ref) for ref in refs)
    print(f"{'SECRET':<{width}}  VERSION  KEYS")
    for ref, info in zip(refs, infos, strict=True):
        keys = " ".join(f"{validate.printable(key)}={MASK}" for key in info.keys)
        print(f"{ref:<{width}}  {info.version:<7}  {keys}")
    return 0


def cmd_secret_delete(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    with _open(args) as room:
        version = room.delete(namespace, name)
    _say(namespace, "/", name, f": deleted (was version {version})")
    return 0


def cmd_secret_rebind(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    with _open(args) as room:
        was = room.rebind(namespace, name)
    whom = f"namespace uid {was}" if was else "no namespace yet"
    _say(namespace, "/", name, f": unbound (was bound to {whom}); the ManagedSecret of ",
         namespace, " that syncs it next binds it to its namespace")  # fmt: skip
    return 0


def cmd_secret_rotate(args: argparse.Namespace) -> int:
    """Emergency rotation: annotate the ManagedSecret; the operator does the rest
    (:mod:`strongroom.emergency`). Needs only ``patch`` on the ManagedSecret, no store access."""
    namespace, name = _ref(args.ref)
    for key in args.keys:
        try:
            validate.key(key, write=True)
        except ValidationError as exc:
            raise UsageError(str(exc)) from None
    from strongroom.emergency import ROTATE_ANNOTATION, rotation_patch

    patch = rotation_patch(args.keys, revoke=args.revoke)
    _kube_custom(lambda custom: custom.patch_namespaced_custom_object(
        "strongroom.io", "v1alpha1", namespace, "managedsecrets", name, patch), args.ref)  # fmt: skip
    token = patch["metadata"]["annotations"][ROTATE_ANNOTATION]
    _say(namespace, "/", name, f": emergency rotation {token} asked for "
         f"({', '.join(args.keys) or 'every key'}{', old roles revoked' if args.revoke else ''})")  # fmt: skip
    return 0


def _kube_custom(call: Callable[[Any], T], what: str) -> T:
    """``call`` with a CustomObjectsApi from the kubeconfig; API failures as one line."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from strongroom.operator.runtime import load_kube_config

    try:
        return call(k8s.CustomObjectsApi(load_kube_config(1, 30.0)))
    except ApiException as exc:
        raise StrongroomError(f"{what}: the Kubernetes API answered {exc.status} "
                              f"({exc.reason})") from None  # fmt: skip
    except HTTPError as exc:
        raise StrongroomError(f"{what}: Kubernetes API unreachable ({type(exc).__name__})") from None


def cmd_secret_verify(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    raw = sys.stdin.read()
    if raw.endswith("\n"):
        raw = raw[:-1]
    candidate: Any = raw
    if args.json:
        try:
            candidate = json.loads(raw)
        except json.JSONDecodeError:
            raise UsageError("--json: the candidate on stdin is not JSON") from None
    with _open(args) as room:
        match = room.verify(namespace, name, args.key, candidate)
    print("match" if match else "mismatch")
    return 0 if match else 1


def cmd_secret_history(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    with _open(args) as room:
        rows = room.history(namespace, name)
    print("VERSION  STATE      CREATED                           BY")
    for version, state, by, at in rows:
        _say(f"{version:<7}  {state:<9}  {at.isoformat():<32}  ", by)
    return 0


# --- audit ---------------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    # The checkpoint first, then the store: one published meanwhile is never ahead of a store
    # that holds it (the order the operator keeps too).
    expected, source = _expected_checkpoint(args)
    with _open(args) as room:
        report = room.audit_verify()
        problem = room.audit_check_checkpoint(expected) if expected and report.ok else None
    if not report.ok:
        _say(f"strongroom: audit chain broken at event {report.first_bad_seq}: ", report.reason,
             file=sys.stderr)  # fmt: skip
        return 1
    if problem is not None:
        _say("strongroom: ", source, ": ", problem, file=sys.stderr)
        return 1
    if report.keyed_from is not None:
        print(f"audit chain intact: {report.count} events, keyed from event {report.keyed_from}")
    else:
        print(f"audit chain intact: {report.count} events")
        if report.count:
            print("strongroom: the chain is not keyed yet (written before schema 0002); "
                  "the next audited operation starts its keyed part", file=sys.stderr)  # fmt: skip
    if expected is not None:
        _say(source, f": reached (event {expected.seq})")
    return 0


def _expected_checkpoint(args: argparse.Namespace) -> tuple[Checkpoint | None, str]:
    """The checkpoint ``audit verify`` compares with (--expect, or read from --checkpoint)."""
    if args.expect:
        try:
            return Checkpoint.parse(args.expect), f"audit checkpoint {args.expect.strip()}"
        except ValueError as exc:
            raise UsageError(f"--expect: {exc}") from None
    if not args.checkpoint:
        return None, ""
    from strongroom.operator.checkpoint import read_published

    ref = _checkpoint_ref(args.checkpoint)
    published, malformed = _kube_call(lambda core: read_published(core, ref), ref)
    if malformed:
        raise StrongroomError(malformed)
    if published is None or published.checkpoint is None:
        raise StrongroomError(f"audit checkpoint {ref}: none published (no ConfigMap, or empty)")
    return published.checkpoint, f"audit checkpoint {ref}"


def _checkpoint_ref(text: str) -> CheckpointRef:
    try:
        from strongroom.operator.checkpoint import CheckpointRef
    except ImportError:
        raise ConfigError(
            "reading a checkpoint from Kubernetes needs the operator's extras: "
            "pip install 'strongroom[operator]' (or use --expect SEQ:MAC)"
        ) from None
    namespace, name = _ref(text)
    return CheckpointRef.parse(f"{namespace}/{name}")


def _kube_call(call: Callable[[Any], T], ref: CheckpointRef) -> T:
    """``call`` with a CoreV1Api from the kubeconfig; API failures as one line."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from strongroom.operator.runtime import load_kube_config

    try:
        return call(k8s.CoreV1Api(load_kube_config(1, 30.0)))
    except ApiException as exc:
        raise StrongroomError(
            f"audit checkpoint {ref}: the Kubernetes API answered {exc.status} ({exc.reason})"
        ) from None
    except HTTPError as exc:
        raise StrongroomError(
            f"audit checkpoint {ref}: Kubernetes API unreachable ({type(exc).__name__})"
        ) from None


def cmd_audit_checkpoint_reset(args: argparse.Namespace) -> int:
    """Accept the store's head as the checkpoint (after restoring a backup), audited."""
    from strongroom.operator.checkpoint import read_published, write_published

    ref = _checkpoint_ref(args.ref)
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must say why the store's head is accepted")
    with _open(args) as room:  # first: a store that cannot be opened is the error to report
        published, malformed = _kube_call(lambda core: read_published(core, ref), ref)
        old = published.checkpoint if published is not None else None
        if malformed:
            was = "malformed"
        elif old is None:
            was = "none"
        else:
            problem = room.audit_check_checkpoint(old)
            was = f"event {old.seq}, " + ("which the store reaches" if problem is None
                                          else "which the store does not reach")  # fmt: skip
        room.record(AuditEvent(
            time=datetime.now(UTC), actor=room.settings.actor, action=CHECKPOINT_RESET_ACTION,
            outcome=Outcome.OK, namespace=ref.namespace, name=ref.name,
            detail=clip(validate.printable(f"checkpoint was {was}; reason: {reason}")),
        ))  # fmt: skip
        head = room.audit_checkpoint()
    if head is None:  # cannot happen: the event just recorded is keyed
        raise StrongroomError("the store's audit chain has no audit key")
    actor = room.settings.actor
    _kube_call(lambda core: write_published(core, ref, head, previous=published, by=actor), ref)
    _say(f"audit checkpoint {ref}: reset to event {head.seq} (was {was}); recorded as "
         f"audit event {CHECKPOINT_RESET_ACTION}")  # fmt: skip
    return 0


def cmd_audit_tail(args: argparse.Namespace) -> int:
    with _open(args) as room:
        events = room.audit_tail(args.count)
    for event in events:
        if args.json:
            _say_json(
                {
                    "seq": event.seq,
                    "time": event.time.isoformat(),
                    "actor": event.actor,
                    "action": event.action,
                    "namespace": event.namespace,
                    "name": event.name,
                    "key": event.key,
                    "version": event.version,
                    "outcome": event.outcome,
                    "detail": event.detail,
                    "hash": event.hash,
                }
            )
        else:
            # Every field escaped: the rows come from the database (and, for a refused call,
            # from whatever the caller sent), and one line must stay one event.
            target = f"{event.namespace}/{event.name}" if event.name else event.namespace or "-"
            if event.key:
                target += f" [{event.key}]"
            version = f" v{event.version}" if event.version is not None else ""
            _say(f"{event.seq:>6} {event.time.isoformat(timespec='seconds')} ", event.actor, " ",
                 event.action, " ", target, f"{version} ", event.outcome,
                 f" ({event.detail})" if event.detail else "")  # fmt: skip
    return 0


# --- keys ----------------------------------------------------------------------------------


def cmd_kek_rotate(args: argparse.Namespace) -> int:
    from strongroom.keyring import keyring_for
    from strongroom.rotation import rotate_kek

    try:
        target_spec = KekSpec.parse(args.to)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    with _open(args) as room:
        target = keyring_for(room.settings, target_spec.provider, target_spec.key)
        report = rotate_kek(room, target)
    _say_json({"rewrapped": report.rewrapped, "unchanged": report.already, "kek": report.target})
    _say(f"strongroom: every data key is now wrapped by {report.target}; "
         f"set STRONGROOM_KEK={target_spec} before the next write", file=sys.stderr)  # fmt: skip
    return 0


def cmd_kek_status(args: argparse.Namespace) -> int:
    from strongroom.store import repository as repo
    from strongroom.store import transaction

    with _open(args) as room, transaction(room.engine) as conn:
        keys = repo.all_data_keys(conn)
        usage = repo.data_key_usage(conn)
        audit_keys = repo.audit_key_rows(conn)
    print("DATA KEY                              STATE    VERSIONS  PROVIDER  KEK (VERSION)")
    for key in keys:  # rows of the database: escaped like any other printed text
        version = f" (v{key.kek_version})" if key.kek_version else ""
        _say(f"{key.id:<36}  {key.state:<7}  {usage.get(key.id, 0):<8}  {key.provider:<8}  "
             f"{key.kek_id}{version}")  # fmt: skip
    for audit_key in audit_keys:
        version = f" (v{audit_key.kek_version})" if audit_key.kek_version else ""
        _say(f"{audit_key.id:<36}  audit    -         {audit_key.provider:<8}  "
             f"{audit_key.kek_id}{version}")  # fmt: skip
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    from strongroom.rotation import rekey

    with _open(args) as room:
        report = rekey(room, batch=args.batch)
    for failure in report.failures:
        _say(f"strongroom: not re-encrypted: {failure.namespace}/{failure.name} "
             f"[{failure.key}] v{failure.version}: {failure.reason}", file=sys.stderr)  # fmt: skip
    _say_json(report.summary())
    return 0 if report.fail == 0 else 1


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat table of commands
    parser = _Parser(
        prog="strongroom",
        description=(
            "Strongroom keeps secrets envelope-encrypted in a database and syncs them into "
            "Kubernetes Secrets. Configuration comes from STRONGROOM_* environment variables; "
            "the flags below override them."
        ),
        epilog=(
            "environment: STRONGROOM_DATABASE_URL (default sqlite:///strongroom.db, which "
            "must exist: only 'db upgrade' creates it), "
            "STRONGROOM_KEK (local | awskms:<key> | vault:<transit key>), "
            "STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE (64 hex characters). "
            "Exit status: 0 done, 1 failed, 2 bad usage (one line on stderr)."
        ),
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL of the store")
    parser.add_argument("--kek", help="KEK for new data keys: local, awskms:<key>, vault:<key>")
    client.add_arguments(parser)  # --server, --token-file, --ca-file
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keygen = sub.add_parser("keygen", help="print a new random master key (64 hex characters)")
    keygen.add_argument("--out", metavar="PATH",
                        help="write it to a new file of mode 0600 instead (never overwritten)")  # fmt: skip
    keygen.set_defaults(handler=cmd_keygen)

    db = sub.add_parser("db", help="manage the database schema")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    db_up = db_sub.add_parser(
        "upgrade",
        help="run migrations up to the latest schema",
        description=(
            "Create the store or migrate its schema to the latest. With "
            "STRONGROOM_DATABASE_URL unset, this is the one command that creates "
            "./strongroom.db: the others stop with an error rather than start a new, empty "
            "store."
        ),
    )
    db_up.set_defaults(handler=cmd_db_upgrade)

    secret = sub.add_parser("secret", help="set, read, list, verify and delete secrets")
    s_sub = secret.add_subparsers(dest="secret_command", metavar="COMMAND", required=True)

    s_set = s_sub.add_parser(
        "set",
        help="write a new version of a secret",
        description=(
            "Write a new version of NS/NAME. KEY=VALUE stores a string, KEY:=JSON a JSON "
            "value. Keys not named keep their current values unless --replace is given. "
            "Values on the command line land in shell history: prefer --from-file KEY=PATH "
            "or --from-file KEY=- (standard input). An empty value (KEY=, an empty file or "
            "standard input, or line breaks only) is refused unless --allow-empty: it is "
            "most often an unset shell variable or a failed pipe. KEY:='\"\"' stores an empty "
            "string on purpose."
        ),
    )
    s_set.add_argument("ref", metavar="NS/NAME")
    s_set.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    s_set.add_argument(
        "--from-file",
        action="append",
        metavar="KEY=PATH",
        help="read KEY's value from a UTF-8 file ('-' for standard input, one key only)",
    )
    s_set.add_argument("--unset", action="append", metavar="KEY", help="remove KEY")
    s_set.add_argument(
        "--replace", action="store_true", help="the new version holds only the keys given"
    )
    s_set.add_argument("--description", help="a note about the secret (not encrypted)")
    s_set.add_argument("--allow-empty", action="store_true",
                       help="store a value that is empty or only line breaks (KEY=, an empty "
                            "file or empty standard input); refused otherwise (exit 2)")  # fmt: skip
    s_set.set_defaults(handler=cmd_secret_set)

    s_get = s_sub.add_parser(
        "get",
        help="print a secret's values",
        description="Print all keys as KEY=VALUE lines, or one KEY's bare value.",
    )
    s_get.add_argument("ref", metavar="NS/NAME")
    s_get.add_argument("key", nargs="?", metavar="KEY")
    s_get.add_argument("--version", type=_positive, help="an earlier version (default: current)")
    s_get.add_argument("--json", action="store_true", help="print a JSON document")
    s_get.set_defaults(handler=cmd_secret_get)

    s_list = s_sub.add_parser("list", help="list secrets with masked values")
    s_list.add_argument("namespace", nargs="?", metavar="NS")
    s_list.add_argument("--json", action="store_true", help="print JSON")
    s_list.set_defaults(handler=cmd_secret_list)

    s_del = s_sub.add_parser("delete", help="delete a secret and all its versions")
    s_del.add_argument("ref", metavar="NS/NAME")
    s_del.set_defaults(handler=cmd_secret_delete)

    s_rebind = s_sub.add_parser(
        "rebind",
        help="hand a secret's values to a namespace created again under the same name",
        description=(
            "The operator gives stored values only to the namespace (by UID) whose "
            "ManagedSecret first synced them: a namespace deleted and created again, perhaps by "
            "another tenant, gets Ready=False NamespaceMismatch. If the values are meant for "
            "the new namespace, rebind them: the next sync binds them to it (audited)."
        ),
    )
    s_rebind.add_argument("ref", metavar="NS/NAME")
    s_rebind.set_defaults(handler=cmd_secret_rebind)

    s_ver = s_sub.add_parser(
        "verify",
        help="check a candidate value from stdin against the stored one",
        description=(
            "Read a candidate value on standard input (one trailing newline is ignored) and "
            "compare it in constant time with KEY's stored value without printing it. "
            "Exit 0 on a match, 1 otherwise."
        ),
    )
    s_ver.add_argument("ref", metavar="NS/NAME")
    s_ver.add_argument("key", metavar="KEY")
    s_ver.add_argument("--json", action="store_true", help="the candidate is JSON")
    s_ver.set_defaults(handler=cmd_secret_verify)

    s_rot = s_sub.add_parser(
        "rotate",
        help="emergency rotation of a ManagedSecret's keys (through the operator)",
        description=(
            "Annotate the ManagedSecret NS/NAME (strongroom.io/rotate) so that the operator "
            "rotates it now: generated keys get new values, database keys new roles; keys set "
            "out-of-band or imported are marked Ready=False Compromised until a new value is "
            "set. Uses the kubeconfig; needs patch on the ManagedSecret."
        ),
    )
    s_rot.add_argument("ref", metavar="NS/NAME")
    s_rot.add_argument("keys", nargs="*", metavar="KEY", help="these keys only (default: all)")
    s_rot.add_argument("--revoke", action="store_true",
                       help="drop the old database roles at once (their sessions end)")  # fmt: skip
    s_rot.set_defaults(handler=cmd_secret_rotate)

    s_hist = s_sub.add_parser("history", help="list a secret's versions (no values)")
    s_hist.add_argument("ref", metavar="NS/NAME")
    s_hist.set_defaults(handler=cmd_secret_history)

    audit = sub.add_parser("audit", help="inspect the tamper-evident audit log")
    a_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    a_ver = a_sub.add_parser(
        "verify",
        help="check the hash chain; exit 0 only if it is intact",
        description=(
            "Check every link of the audit chain and its head with the audit key. With "
            "--checkpoint or --expect, also check that the store reaches a head recorded "
            "outside it: a store whose head is behind it (an older copy, truncated or emptied) "
            "or whose chain differs at its event fails (exit 1)."
        ),
    )
    a_ver_cp = a_ver.add_mutually_exclusive_group()
    a_ver_cp.add_argument("--checkpoint", metavar="NS/NAME",
                          help="the operator's checkpoint ConfigMap, read through the kubeconfig")  # fmt: skip
    a_ver_cp.add_argument("--expect", metavar="SEQ:MAC",
                          help="a checkpoint recorded elsewhere (no Kubernetes needed)")  # fmt: skip
    a_ver.set_defaults(handler=cmd_audit_verify)
    a_cp = a_sub.add_parser("checkpoint", help="manage the audit checkpoint kept outside the store")
    a_cp_sub = a_cp.add_subparsers(dest="checkpoint_command", metavar="COMMAND", required=True)
    a_reset = a_cp_sub.add_parser(
        "reset",
        help="accept the store's head as the checkpoint (after restoring a backup)",
        description=(
            "Restoring a backup means accepting an older audit head: the operator refuses to "
            "reconcile from a store behind its checkpoint. This records an audit event "
            "(audit.checkpoint.reset, with the old checkpoint and --reason) in the store, then "
            "writes the store's head, that event included, into the ConfigMap NS/NAME through "
            "the kubeconfig. A waiting operator resumes at its next check."
        ),
    )
    a_reset.add_argument("ref", metavar="NS/NAME", help="the checkpoint ConfigMap")
    a_reset.add_argument("--reason", required=True,
                         help="why the older head is accepted (kept in the audit log)")  # fmt: skip
    a_reset.set_defaults(handler=cmd_audit_checkpoint_reset)
    a_tail = a_sub.add_parser("tail", help="print the latest audit events")
    a_tail.add_argument("-n", "--count", type=_positive, default=20, help="how many (default 20)")
    a_tail.add_argument("--json", action="store_true", help="one JSON object per line")
    a_tail.set_defaults(handler=cmd_audit_tail)

    kek = sub.add_parser("kek", help="inspect and rotate the key-encryption key")
    k_sub = kek.add_subparsers(dest="kek_command", metavar="COMMAND", required=True)
    k_rot = k_sub.add_parser(
        "rotate",
        help="rewrap every data key under another KEK",
        description=(
            "Rewrap every data key seed under KEK (local, awskms:<key>, vault:<transit key>): "
            "one unwrap and one wrap per data key, one transaction each. Idempotent and "
            "resumable; for vault it also moves seeds onto the transit key's latest version. "
            "Afterwards set STRONGROOM_KEK to the new KEK; the old one can then be disabled."
        ),
    )
    k_rot.add_argument("--to", required=True, metavar="KEK", help="the KEK to rewrap under")
    k_rot.set_defaults(handler=cmd_kek_rotate)
    k_stat = k_sub.add_parser("status", help="list data keys, their KEK and how much they hold")
    k_stat.set_defaults(handler=cmd_kek_status)

    rekey_p = sub.add_parser(
        "rekey",
        help="re-encrypt every stored value under a fresh data key",
        description=(
            "Start a fresh data key, retire the others and re-encrypt every stored version "
            "in batches (one transaction each). Resumable: run it again after an interruption. "
            'Prints {"success": n, "fail": m, "failures": [...]}; a version that fails to '
            "decrypt is listed and left untouched (exit 1)."
        ),
    )
    rekey_p.add_argument("--batch", type=_positive, default=100, help="versions per commit")
    rekey_p.set_defaults(handler=cmd_rekey)

    _register_extensions(sub)
    return parser


def _register_extensions(sub: argparse._SubParsersAction[_Parser]) -> None:
    """Commands from layers that need optional dependencies (the operator)."""
    run = sub.add_parser(
        "run",
        help="run the operator (syncs ManagedSecrets into Secrets)",
        description=(
            "Run the Kubernetes operator: watch ManagedSecrets, keep their values in the store "
            "and their Secrets in sync. Uses the in-cluster service account, or KUBECONFIG / "
            "~/.kube/config outside a cluster. Without --namespace it watches all namespaces."
        ),
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", metavar="NS",
                       help="watch this namespace (repeatable)")  # fmt: skip
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace (the default)")  # fmt: skip
    run.add_argument("--liveness", metavar="URL", default=None,
                     help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")  # fmt: skip
    run.add_argument("--leader-elect", metavar="[NAMESPACE/]LEASE", default=None,
                     help="run as one of several replicas: reconcile only while holding this "
                          "coordination.k8s.io Lease (namespace: POD_NAMESPACE by default; "
                          "STRONGROOM_LEASE_SECONDS sets its duration, 15 s)")  # fmt: skip
    run.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                     help="serve Prometheus metrics on this port (/metrics)")  # fmt: skip
    run.add_argument("--audit-checkpoint", metavar="[NAMESPACE/]NAME | off", default=None,
                     help="publish the audit head to this ConfigMap and check the store against "
                          "it at start (default: strongroom-audit-checkpoint in POD_NAMESPACE; "
                          "STRONGROOM_AUDIT_CHECKPOINT_SECONDS sets how often, 30 s at most)")  # fmt: skip
    run.add_argument("--trust-namespace-names", action="store_true",
                     help="give stored values to any namespace of their namespace's name, "
                          "without checking that it is the one they were first synced to (its "
                          "UID): for a restored cluster or clusters sharing one store "
                          "(also STRONGROOM_TRUST_NAMESPACE_NAMES=true)")  # fmt: skip
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=cmd_run)
    server_flags.register(sub, run, _settings)  # `serve`, and `run --serve`
    from strongroom import sealcli  # `seal …` (sealed values for Git)

    sealcli.register(sub, open_store=lambda args: Strongroom.open(_settings(args)), say=_say,
                     usage=UsageError)  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    try:
        from strongroom.operator.run import run
        from strongroom.operator.runtime import load_kube_config
    except ImportError:
        raise ConfigError(
            "the operator needs its extras: pip install 'strongroom[operator]'"
        ) from None
    settings = _settings(args)
    # Malformed flags are reported as such (ConfigError), before any cluster access.
    if args.leader_elect:
        from strongroom.operator.leader import LeaseRef

        LeaseRef.parse(args.leader_elect, os.environ.get("POD_NAMESPACE"))
    if args.audit_checkpoint:
        from strongroom.operator.checkpoint import resolve as resolve_checkpoint

        resolve_checkpoint(args.audit_checkpoint, os.environ.get("POD_NAMESPACE"))
    # No kubeconfig is one line and exit 1 here: inside kopf it is a failed startup activity
    # after which the process neither works nor exits.
    load_kube_config(1, 30.0).close()
    run(settings, namespaces=list(args.namespace or []), liveness=args.liveness,
        leader_elect=args.leader_elect, verbose=args.verbose,
        metrics_port=args.metrics_port, audit_checkpoint=args.audit_checkpoint,
        trust_namespace_names=args.trust_namespace_names,
        serve=server_flags.run_options(args))  # fmt: skip
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a positive whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


_OPTION_NAME = re.compile(r"--?[A-Za-z][-A-Za-z0-9_]*")


def _vocabulary(parser: argparse.ArgumentParser) -> set[str]:
    """Every word the parser defines: option strings, command names, choices, metavars."""
    words: set[str] = set()
    for action in parser._actions:  # argparse has no public walk of its tree
        words.update(action.option_strings)
        words.update(str(m) for m in (action.metavar, action.dest) if m)
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                words.add(command)
                words |= _vocabulary(child)
        elif action.choices is not None:
            words.update(str(choice) for choice in action.choices)
    return words


def _without_values(message: str, argv: Iterable[str], vocabulary: set[str]) -> str:
    """An argparse message with every piece of the command line that it quotes taken out.

    argparse repeats what was typed (``invalid choice: 'pw=hunter2'``, ``ambiguous option:
    --pa=hunter2 could match ...``, ``ignored explicit argument 'hunter2'``). Any piece of
    argv that is neither a word the parser defines nor shaped like an option name
    (``--bogus``, which argparse itself takes for one) is replaced by ``…``; an option typed as
    ``--name=value`` keeps its name only.
    """
    pieces: set[str] = set()
    for token in argv:
        name, sep, value = token.partition("=")
        if sep and _OPTION_NAME.fullmatch(name):
            message = message.replace(token, f"{name}=…")
            pieces.add(value)
        elif not _OPTION_NAME.fullmatch(token):  # an option's name is shown, as argparse reads it
            pieces.update((token, name, value) if sep else (token,))
    for piece in sorted(pieces - vocabulary - {""}, key=len, reverse=True):
        message = message.replace(repr(piece), "'…'")
        message = re.sub(rf"(?<![\w.=-]){re.escape(piece)}(?![\w.=-])", "…", message)
    return message


def _unrecognized(extras: Sequence[str]) -> str:
    """Unknown options by name; other stray arguments only counted (they may be values)."""
    options = sorted({e.partition("=")[0] for e in extras if e.startswith("-")})
    others = sum(1 for e in extras if not e.startswith("-"))
    parts = []
    if options:
        parts.append(f"unrecognized option{'s' if len(options) > 1 else ''} {', '.join(options)}")
    if others:
        parts.append(f"{others} unexpected argument{'s' if others > 1 else ''} (not shown: "
                     "an argument may be a value)")  # fmt: skip
    return "; ".join(parts)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | None:
    """The parsed command line, or None after printing a usage error without its values."""
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extras = parser.parse_known_args(given)
        # `secret set ns/x --from-file a=PATH b=2`: argparse stops collecting positionals at
        # the first option; assignments after it are still assignments.
        if getattr(args, "handler", None) is cmd_secret_set and not any(
            e.startswith("-") for e in extras
        ):
            args.assignments = [*args.assignments, *extras]
        elif extras:
            parser.error(_unrecognized(extras))
    except _BadUsage as bad:
        bad.parser.print_usage(sys.stderr)
        message = _without_values(bad.message, given, _vocabulary(parser))
        _say(bad.parser.prog, ": error: ", message, file=sys.stderr)
        return None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    return 2 if args is None else _run(args)


def _run(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a full disk or a closed pipe fails here, not at interpreter exit
        return code
    except UsageError as exc:
        _say("strongroom: error: ", exc, file=sys.stderr)
        return 2
    except StrongroomError as exc:
        _say("strongroom: error: ", exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("strongroom: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback, no values
        return _unexpected(exc)


_DEVICE_FULL_OR_FAILING = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def _unexpected(exc: Exception) -> int:
    """Exit 1 for an exception no layer translated: a full or failing device (the output
    written to a full disk) in its own words, anything else as an internal error."""
    if isinstance(exc, OSError) and exc.errno in _DEVICE_FULL_OR_FAILING:
        _say("strongroom: error: ", os.strerror(exc.errno), file=sys.stderr)
        return 1
    if os.environ.get("STRONGROOM_DEBUG"):
        traceback.print_exception(exc)
    print(
        f"strongroom: internal error ({type(exc).__name__}); "
        "set STRONGROOM_DEBUG=1 for a traceback",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
