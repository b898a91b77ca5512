"""``strongroom seal …``: sealed values for GitOps (issue 18), registered by :mod:`strongroom.cli`.

=====================================  ==========================================================
``seal value NS/NAME KEY``             seal a value (stdin or ``--from-file``, never argv) to
                                       the public key of ``--public-key FILE`` or of the
                                       ConfigMap the operator publishes (``--configmap NS/NAME``,
                                       read with the kubeconfig); print the ``data`` item, or
                                       write it into a ManagedSecret file (``--in-place FILE``)
``seal public-key``                    print the public key document from the store
``seal rotate``                        start a new sealing key (the store's), now the active one
``seal keys``                          list the sealing keys and the sealed values using each
``seal prune KEY_ID…``                 remove old keys (not the active one; not a used one
                                       without ``--force``)
``seal reseal FILE…``                  rewrite every blob of older keys under the active key
``seal import-sealedsecret FILE``      a Bitnami SealedSecret → a ManagedSecret with our blobs
=====================================  ==========================================================

``seal value`` needs no store and no secret: only the public key. ``reseal`` opens the old
blobs, so it needs the store (the administrator's access); the values exist in memory only
while they are sealed again, and nothing is written unless every blob of a file opens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strongroom import validate
from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Outcome
from strongroom.errors import ConfigError, StrongroomError, ValidationError
from strongroom.sealing.blob import (
    Place,
    PublicSealingKey,
    SealedInvalid,
    SuiteId,
    header,
    open_sealed,
    seal,
)
from strongroom.sealing.keys import SealingKeys, public_document, read_public_document

DEFAULT_CONFIGMAP = "strongroom-sealing-keys"
MAX_INPUT = 1 << 20

Opener = Callable[[argparse.Namespace], Strongroom]
Say = Callable[..., None]


class _Deps:
    """What :mod:`strongroom.cli` lends this module (it cannot import the CLI: layers)."""

    open_store: Opener
    say: Say
    usage: type[StrongroomError]


_deps = _Deps()


def register(sub: Any, *, open_store: Opener, say: Say, usage: type[StrongroomError]) -> None:
    """Add ``seal`` and its subcommands to the ``strongroom`` parser."""
    _deps.open_store, _deps.say, _deps.usage = open_store, say, usage
    seal_p = sub.add_parser("seal", help="seal values for Git (HPKE) and manage sealing keys")
    s_sub = seal_p.add_subparsers(dest="seal_command", metavar="COMMAND", required=True)

    value = s_sub.add_parser(
        "value", help="seal a value for NAMESPACE/NAME KEY (offline, with the public key)",
        description="Seal a value read from standard input (or --from-file) for one key of one "
                    "ManagedSecret. Only the public key is needed. The value is never taken "
                    "from the command line.")  # fmt: skip
    value.add_argument("ref", metavar="NAMESPACE/NAME")
    value.add_argument("key", metavar="KEY")
    value.add_argument("--from-file", metavar="PATH", default="-",
                       help="read the value from this file (default: standard input, '-')")  # fmt: skip
    _public_key_args(value)
    value.add_argument("--in-place", metavar="FILE",
                       help="write the sealed value into this ManagedSecret file (comments kept)")  # fmt: skip
    value.add_argument("--allow-empty", action="store_true", help="seal an empty value")
    value.set_defaults(handler=cmd_seal_value)

    public = s_sub.add_parser("public-key", help="print the public key document (from the store)")
    public.set_defaults(handler=cmd_seal_public_key)

    rotate = s_sub.add_parser("rotate", help="start a new sealing key (becomes the active key)")
    rotate.add_argument("--suite", choices=[s.label for s in SuiteId], default=None,
                        help="HPKE suite (default: STRONGROOM_SEALING_SUITE, mlkem768-x25519)")  # fmt: skip
    rotate.set_defaults(handler=cmd_seal_rotate)

    keys = s_sub.add_parser("keys", help="list sealing keys and the sealed values using each")
    keys.add_argument("--json", action="store_true", help="one JSON document")
    keys.set_defaults(handler=cmd_seal_keys)

    prune = s_sub.add_parser("prune", help="remove old sealing keys from the store")
    prune.add_argument("key_ids", nargs="+", metavar="KEY_ID")
    prune.add_argument("--force", action="store_true",
                       help="prune even if sealed values still use the key (they stop opening)")  # fmt: skip
    prune.set_defaults(handler=cmd_seal_prune)

    reseal = s_sub.add_parser("reseal", help="rewrite blobs of older keys under the active key")
    reseal.add_argument("files", nargs="+", metavar="FILE")
    reseal.set_defaults(handler=cmd_seal_reseal)

    imp = s_sub.add_parser(
        "import-sealedsecret",
        help="turn a Bitnami SealedSecret into a ManagedSecret with Strongroom blobs")  # fmt: skip
    imp.add_argument("file", metavar="SEALEDSECRET_YAML")
    imp.add_argument("--private-key", metavar="PEM", required=True,
                     help="the Sealed Secrets controller's private key (its backup), PEM")  # fmt: skip
    _public_key_args(imp)
    imp.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    imp.set_defaults(handler=cmd_seal_import)


def _public_key_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--public-key", metavar="FILE",
                        help="public key document (from `seal public-key`, or the ConfigMap's "
                             "YAML/JSON)")  # fmt: skip
    parser.add_argument("--configmap", metavar="NAMESPACE/NAME",
                        help="read the public keys from this ConfigMap with the kubeconfig "
                             f"(the operator publishes {DEFAULT_CONFIGMAP} in its namespace)")  # fmt: skip
    parser.add_argument("--key-id", metavar="ID", help="seal to this key (default: the active)")


# -- reading inputs --------------------------------------------------------------------------

def _ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise _deps.usage("the ManagedSecret must be given as NAMESPACE/NAME (one '/')")
    try:
        validate.namespace(namespace, limits=validate.KUBERNETES, write=True)
        validate.name(name)
    except ValidationError:  # not echoed: a value typed where the reference belongs
        raise _deps.usage("NAMESPACE/NAME is not a Kubernetes namespace and object name (not "
                          "shown: it may hold a value)") from None  # fmt: skip
    return namespace, name


def _read_value(path: str, allow_empty: bool) -> str:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with Path(path).open("rb") as handle:
                raw = handle.read(MAX_INPUT + 1)
    except OSError as exc:
        raise _deps.usage(f"--from-file: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_INPUT:
        raise ValidationError("the value is larger than 1 MiB, a Secret's limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("the value is not UTF-8 text") from None
    if not allow_empty and not text.strip("\r\n"):
        raise _deps.usage("the value is empty (or line breaks only); nothing was sealed "
                          "(give --allow-empty to seal it)")  # fmt: skip
    return text


def _document(raw: Any, where: str) -> Mapping[str, Any]:
    if isinstance(raw, Mapping) and raw.get("kind") == "ConfigMap":
        raw = raw.get("data")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} is not a public key document")
    return raw


def _public_key(args: argparse.Namespace) -> PublicSealingKey:
    if bool(args.public_key) == bool(args.configmap):
        raise _deps.usage("give exactly one of --public-key FILE or --configmap NAMESPACE/NAME")
    if args.public_key:
        import yaml

        try:
            text = Path(args.public_key).read_text(encoding="utf-8")
            doc = _document(yaml.safe_load(text), f"--public-key {args.public_key}")
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raise ConfigError(f"--public-key: cannot read {args.public_key} as YAML or JSON") from None
    else:
        doc = _configmap_data(args.configmap)
    try:
        return read_public_document(doc, args.key_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _configmap_data(ref: str) -> Mapping[str, Any]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise _deps.usage("--configmap must be NAMESPACE/NAME")
    try:
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config
        from kubernetes.client.exceptions import ApiException
    except ImportError:
        raise ConfigError("--configmap needs the operator extras: pip install "
                          "'strongroom[operator]'") from None  # fmt: skip
    try:
        k8s_config.load_kube_config()
    except (k8s_config.ConfigException, OSError) as exc:
        raise ConfigError(f"--configmap: no usable kubeconfig ({type(exc).__name__})") from None
    with k8s.ApiClient() as api:
        try:
            found = k8s.CoreV1Api(api).read_namespaced_config_map(name, namespace,
                                                                   _request_timeout=30)  # fmt: skip
        except ApiException as exc:
            raise ConfigError(f"--configmap {namespace}/{name}: the cluster answered "
                              f"{exc.status} {exc.reason}") from None  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"--configmap {namespace}/{name}: cluster unreachable "
                              f"({type(exc).__name__})") from None  # fmt: skip
    return dict(found.data or {})


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (same mode), or leave it as it was."""
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({type(exc).__name__})") from None


# -- commands --------------------------------------------------------------------------------

def cmd_seal_value(args: argparse.Namespace) -> int:
    namespace, name = _ref(args.ref)
    try:
        validate.key(args.key, write=True)
    except ValidationError:
        raise _deps.usage("KEY is not a Secret data key (not shown: it may hold a value; the "
                          "value is read from standard input or --from-file)") from None  # fmt: skip
    key = _public_key(args)  # before reading the value: a wrong key wastes no paste
    value = _read_value(args.from_file, args.allow_empty)
    blob = seal(key, Place(namespace, name, args.key), value)
    if args.in_place:
        from strongroom.sealing.files import FileError, set_sealed

        path = Path(args.in_place)
        try:
            new = set_sealed(_read_file(args.in_place), namespace, name, args.key, blob)
        except FileError as exc:
            raise ValidationError(f"{args.in_place}: {exc}") from None
        _write_atomically(path, new)
        _deps.say(f"{args.in_place}: {namespace}/{name} [{args.key}] sealed to key {key.key_id}",
                  file=sys.stderr)  # fmt: skip
        return 0
    print(f"- key: {args.key}\n  sealed: {blob}")
    return 0


def cmd_seal_public_key(args: argparse.Namespace) -> int:
    with _deps.open_store(args) as room:
        listed = SealingKeys(room, actor=room.settings.actor).list()
    if not listed:
        raise ValidationError("the store has no sealing key yet: run `strongroom seal rotate` "
                              "or start the operator")  # fmt: skip
    print(json.dumps(public_document(listed), indent=2, sort_keys=True))
    return 0


def cmd_seal_rotate(args: argparse.Namespace) -> int:
    with _deps.open_store(args) as room:
        suite = SuiteId.parse(args.suite or room.settings.sealing.suite)
        info = SealingKeys(room, actor=room.settings.actor).rotate(suite)
    _deps.say(f"sealing key {info.key_id} ({suite.label}) is now the active key")
    return 0


def cmd_seal_keys(args: argparse.Namespace) -> int:
    with _deps.open_store(args) as room:
        keys = SealingKeys(room, actor=room.settings.actor)
        listed, usage = keys.list(), keys.usage()
    active = listed[-1].key_id if listed else None
    rows: list[dict[str, Any]] = [{"keyId": k.key_id, "suite": k.suite.label, "created": k.created.isoformat(),
             "active": k.key_id == active,
             "usedBy": sorted(f"{u.namespace}/{u.name}[{u.key}]" for u in usage.get(k.key_id, []))}
            for k in listed]  # fmt: skip
    orphans = sorted(set(usage) - {k.key_id for k in listed})
    if args.json:
        print(json.dumps({"keys": rows, "missingKeys": {
            k: sorted(f"{u.namespace}/{u.name}[{u.key}]" for u in usage[k]) for k in orphans}},
            indent=2))  # fmt: skip
        return 0
    print("KEY ID            SUITE            CREATED                    ACTIVE  USED BY")
    for row in rows:
        _deps.say(f"{row['keyId']:<16}  {row['suite']:<15}  {row['created'][:19]:<25}  "
                  f"{'yes' if row['active'] else '':<6}  {len(row['usedBy'])} "
                  f"{', '.join(row['usedBy'])}")  # fmt: skip
    for missing in orphans:  # blobs whose key was pruned: they no longer open
        _deps.say(f"{missing:<16}  (pruned)         -                          -       "
                  f"{len(usage[missing])} {', '.join(sorted(f'{u.namespace}/{u.name}[{u.key}]' for u in usage[missing]))}")  # fmt: skip
    return 0


def cmd_seal_prune(args: argparse.Namespace) -> int:
    with _deps.open_store(args) as room:
        pruned = SealingKeys(room, actor=room.settings.actor).prune(args.key_ids,
                                                                    force=args.force)  # fmt: skip
    _deps.say(f"pruned sealing keys: {', '.join(pruned)}")
    return 0


def cmd_seal_reseal(args: argparse.Namespace) -> int:
    from strongroom.sealing.files import FileError, replace_sealed

    with _deps.open_store(args) as room:
        texts = {path: _read_file(path) for path in args.files}
        keys = SealingKeys(room, actor=room.settings.actor, cache_seconds=600.0)
        active = keys.active()
        if active is None:
            raise ValidationError("the store has no sealing key yet")
        target = active.public_key()
        results: dict[str, tuple[str, int]] = {}
        for path, text in texts.items():
            failed: list[str] = []

            def change(item: Any, blob: str, failed: list[str] = failed) -> str | None:
                place = Place(item.namespace, item.name, item.key)
                try:
                    if header(blob).key_id == target.key_id:
                        return None
                    return seal(target, place, open_sealed(blob, place, keys.private))
                except SealedInvalid:
                    failed.append(f"{item.namespace}/{item.name}[{item.key}]")
                    return None

            try:
                results[path] = replace_sealed(text, change)
            except FileError as exc:
                raise ValidationError(f"{path}: {exc}") from None
            if failed:
                raise ValidationError(f"{path}: sealed values that do not open here: "
                                      f"{', '.join(failed)}; no file was changed")  # fmt: skip
        for path, (new, count) in results.items():
            if count:
                _write_atomically(Path(path), new)
            room.record(AuditEvent(time=datetime.now(UTC), actor=room.settings.actor,
                                   action="sealing.reseal", outcome=Outcome.OK,
                                   detail=validate.printable(
                                       f"{count} blobs of {Path(path).name} resealed to "
                                       f"{target.key_id}")))  # fmt: skip
            _deps.say(f"{path}: {count} sealed values resealed to key {target.key_id}")
    return 0


def cmd_seal_import(args: argparse.Namespace) -> int:
    from strongroom.sealing.bitnami import import_sealedsecret

    key = _public_key(args)
    try:
        pem = Path(args.private_key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--private-key: cannot read {args.private_key}: {exc.strerror}") from None
    out = import_sealedsecret(_read_file(args.file), pem, key)
    if args.output:
        path = Path(args.output)
        if not path.exists():
            path.touch(mode=0o644)
        _write_atomically(path, out)
    else:
        print(out, end="")
    return 0
