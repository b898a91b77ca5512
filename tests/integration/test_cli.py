"""The `strongroom` command as users run it: the installed console script, in a subprocess."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

STRONGROOM = shutil.which("strongroom", path=str(Path(sys.executable).parent)) or "strongroom"
KEY = "3c" * 32


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    out["STRONGROOM_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    out["STRONGROOM_MASTER_KEY"] = KEY
    out["STRONGROOM_ACTOR"] = "cli-test"
    return out


def run(env: dict[str, str], *args: str, stdin: str = "",
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [STRONGROOM, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=60,
        check=False,
        cwd=cwd,
    )


def ok(env: dict[str, str], *args: str, stdin: str = "") -> str:
    result = run(env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keygen_prints_a_usable_master_key(env: dict[str, str]) -> None:
    key = ok(env, "keygen").strip()
    assert len(key) == 64
    int(key, 16)
    env["STRONGROOM_MASTER_KEY"] = key
    ok(env, "secret", "set", "ns/s", "k=v")


def test_db_upgrade_is_idempotent(env: dict[str, str]) -> None:
    assert "upgraded from empty" in ok(env, "db", "upgrade")
    assert "already at" in ok(env, "db", "upgrade")


def test_set_get_list_delete(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("-----BEGIN CERT-----\nabc\n")
    assert (
        ok(
            env,
            "secret",
            "set",
            "team/db",
            "password=s3cr=t",
            "port:=5432",
            "--from-file",
            "cert=" + str(tmp_path / "cert.pem"),
            "--description",
            "primary db",
        ).strip()
        == "team/db: version 1"
    )
    assert ok(env, "secret", "get", "team/db", "password") == "s3cr=t"
    assert ok(env, "secret", "get", "team/db", "cert") == "-----BEGIN CERT-----\nabc\n"
    assert ok(env, "secret", "get", "team/db", "port") == "5432"
    ok(env, "secret", "set", "team/db", "password=new", "--from-file", "token=-", stdin="tok\n")
    assert ok(env, "secret", "get", "team/db", "token") == "tok\n"
    assert ok(env, "secret", "get", "team/db", "password", "--version", "1") == "s3cr=t"
    listing = ok(env, "secret", "list")
    assert "team/db" in listing
    assert "s3cr=t" not in listing
    assert "new" not in listing

    doc = json.loads(ok(env, "secret", "get", "team/db", "--json"))
    assert doc["version"] == 2
    assert doc["data"]["port"] == 5432
    assert "deleted" in ok(env, "secret", "delete", "team/db")
    assert run(env, "secret", "get", "team/db").returncode == 1


def test_verify_reads_the_candidate_from_stdin(env: dict[str, str]) -> None:
    ok(env, "secret", "set", "ns/s", "pin=1234")
    good = run(env, "secret", "verify", "ns/s", "pin", stdin="1234\n")
    bad = run(env, "secret", "verify", "ns/s", "pin", stdin="9999\n")
    assert (good.returncode, good.stdout.strip()) == (0, "match")
    assert (bad.returncode, bad.stdout.strip()) == (1, "mismatch")
    assert "1234" not in good.stdout + good.stderr + bad.stdout + bad.stderr


def test_audit_verify_and_tail(env: dict[str, str], tmp_path: Path) -> None:
    ok(env, "secret", "set", "ns/s", "k=canary-cli-tail")
    ok(env, "secret", "get", "ns/s")
    assert "intact: 5 events, keyed from event 1" in ok(env, "audit", "verify")
    tail = ok(env, "audit", "tail", "-n", "2")
    assert "secret.get ns/s" in tail
    assert "cli-test" in tail
    assert "canary-cli-tail" not in tail
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("UPDATE audit_events SET action = 'secret.list' WHERE seq = 2")
    broken = run(env, "audit", "verify")
    assert broken.returncode == 1
    assert "event 2" in broken.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        pytest.param(["secret", "get", "no-slash"], 2, "NAMESPACE/NAME", id="bad-ref"),
        pytest.param(["secret", "set", "ns/s", "novalue"], 2, "KEY=VALUE", id="bad-assignment"),
        pytest.param(["secret", "set", "ns/s", "k:={bad"], 2, "JSON", id="bad-json"),
        pytest.param(
            ["secret", "set", "ns/s", "--from-file", "k=/nonexistent"],
            2,
            "cannot read",
            id="missing-file",
        ),
        pytest.param(["secret", "set", "NS/s", "k=v"], 1, "lowercase", id="bad-namespace"),
        pytest.param(["secret", "get", "ns/absent"], 1, "not found", id="not-found"),
        pytest.param(["secret", "get", "ns/s", "--version", "0"], 2, "positive", id="bad-version"),
        pytest.param(
            ["--database-url", "mysql://x/y", "secret", "list"], 1, "unsupported", id="bad-url"
        ),
        pytest.param(["--kek", "nope", "secret", "list"], 1, "--kek", id="bad-kek"),
        pytest.param(["frobnicate"], 2, "invalid choice", id="unknown-command"),
    ],
)
def test_errors_are_one_line_without_traceback(
    env: dict[str, str], args: list[str], code: int, needle: str
) -> None:
    result = run(env, *args)
    assert result.returncode == code
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(("strongroom: error", "usage", "strongroom"))
    )


def test_a_malformed_master_key_is_one_clear_line(env: dict[str, str]) -> None:
    env["STRONGROOM_MASTER_KEY"] = "not-hex"
    result = run(env, "secret", "list")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "STRONGROOM_MASTER_KEY" in result.stderr


def test_a_failed_set_writes_nothing(env: dict[str, str]) -> None:
    ok(env, "secret", "set", "ns/s", "a=1")
    assert run(env, "secret", "set", "ns/s", "b=2", "bad key=3").returncode == 1
    assert ok(env, "secret", "get", "ns/s") == "a=1\n"


# --- input the store cannot hold (issue 14, item 7) -------------------------------------------


def audit(env: dict[str, str], count: int = 1) -> list[dict[str, object]]:
    lines = ok(env, "audit", "tail", "--json", "-n", str(count)).splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("args", "action", "needle"),
    [
        pytest.param(["secret", "set", "ns/s", 'pw:="\\ud800"'], "secret.set", "lone surrogate",
                     id="lone-surrogate"),
        pytest.param(["secret", "set", "ns/s", "deep:=" + "[" * 100 + "]" * 100], "secret.set",
                     "more than 64 levels", id="deep-json"),
        pytest.param(["secret", "set", "ns/s", "..data=x"], "secret.set", "'..data' is refused",
                     id="dotdot-data-key"),
        pytest.param(["secret", "set", "team.a/s", "k=v"], "secret.set", "no '.'",
                     id="namespace-with-a-dot"),
        pytest.param(["secret", "set", "strongroom.internal/sync-hmac-key", "key=00"],
                     "secret.set", "reserved", id="internal-namespace-write"),
        pytest.param(["secret", "get", "strongroom.internal/sync-hmac-key"], "secret.get",
                     "reserved", id="internal-namespace-read"),
        pytest.param(["secret", "set", "ns/s", "bad key=3"], "secret.set", "key 'bad key'",
                     id="bad-key"),
    ],
)  # fmt: skip
def test_input_the_store_cannot_hold_is_one_line_and_audited(
    env: dict[str, str], args: list[str], action: str, needle: str
) -> None:
    """Before: an internal UnicodeEncodeError, a stored value 100 levels deep, a stored
    ``..data`` key and dotted namespace, and refused sets missing from the audit log."""
    result = run(env, *args)
    assert result.returncode == 1, result.stdout
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1
    assert "internal error" not in result.stderr
    event = audit(env)[-1]
    assert (event["action"], event["outcome"]) == (action, "invalid")
    assert needle in str(event["detail"])
    assert "no secrets" in run(env, "secret", "list").stderr


def test_json_deeper_than_the_parser_is_refused_in_one_line(env: dict[str, str]) -> None:
    """Before: "internal error (RecursionError)"."""
    result = run(env, "secret", "set", "ns/s", "deep:=" + "[" * 50_000 + "]" * 50_000)
    assert result.returncode == 1
    assert "nests objects or lists too deeply" in result.stderr
    assert "internal error" not in result.stderr


def test_a_newline_in_a_name_cannot_forge_an_audit_line(env: dict[str, str]) -> None:
    """Before: the refused name went into the log raw and ``audit tail`` printed two lines."""
    forged = "\n    99 2026-01-01T00:00:00 admin secret.delete {} v1 ok"
    assert run(env, "secret", "get", "ns/s" + forged.format("other")).returncode == 1  # name
    assert run(env, "secret", "get", "ns/s", "k" + forged.format("ns/other")).returncode == 1
    env["STRONGROOM_ACTOR"] = "mallory\r\x1b[2K    98 2026-01-01T00:00:00 admin"
    assert run(env, "secret", "get", "ns/absent").returncode == 1
    ok(env, "secret", "set", "ns/s", "k=v")
    tail = ok(env, "audit", "tail", "-n", "100")
    events = audit(env, 100)
    assert len(tail.splitlines()) == len(events)
    assert "\x1b" not in tail
    assert "\\n    99 2026-01-01T00:00:00 admin secret.delete" in tail
    assert "mallory\\r\\x1b[2K" in tail
    assert all(not line.startswith(("    99", "    98")) for line in tail.splitlines())


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["secret", "set", "ns/s", "k=v", "--bogus", "pw=hunter2"], id="unknown-option"),
        pytest.param(["secret", "set", "ns/s", "--bogus=hunter2"], id="unknown-option-equals"),
        pytest.param(["secret", "get", "ns/s", "--json=hunter2"], id="flag-given-a-value"),
        pytest.param(["secret", "get", "ns/s", "--version", "hunter2"], id="bad-number"),
        pytest.param(["hunter2"], id="unknown-command"),
        pytest.param(["secret", "hunter2=x"], id="unknown-subcommand"),
        pytest.param(["secret", "set", "pw=hunter2"], id="value-as-reference"),
        pytest.param(["secret", "set", "ns/s", "hunter2"], id="value-without-key"),
        pytest.param(["secret", "set", "ns/s", "=hunter2"], id="empty-key"),
        pytest.param(["secret", "get", "ns/s", "k", "hunter2"], id="extra-argument"),
        pytest.param(["audit", "tail", "-n", "hunter2"], id="bad-count"),
    ],
)  # fmt: skip
def test_a_usage_error_never_repeats_an_argument_value(env: dict[str, str], args: list[str]) -> None:
    """Before: ``unrecognized arguments: --bogus pw=hunter2`` and the like."""
    result = run(env, *args)
    assert result.returncode == 2
    assert "hunter2" not in result.stdout + result.stderr
    assert "error" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_option_is_still_named(env: dict[str, str]) -> None:
    result = run(env, "secret", "set", "ns/s", "k=v", "--bogus=hunter2")
    assert "unrecognized option --bogus" in result.stderr


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        pytest.param({"STRONGROOM_DATABASE_URL": ""}, "STRONGROOM_DATABASE_URL is set but empty",
                     id="empty-variable"),
        pytest.param({"STRONGROOM_DATABASE_URL": " "}, "set but empty", id="blank-variable"),
        pytest.param({"--database-url": ""}, "--database-url is empty", id="empty-flag"),
        pytest.param({"STRONGROOM_DATABASE_URL": "sqlite://"}, "in-memory", id="in-memory"),
        pytest.param({"STRONGROOM_DATABASE_URL": "strongroom.db"}, "not a database URL",
                     id="a-path-not-a-url"),
    ],
)  # fmt: skip
def test_an_empty_or_malformed_database_url_is_a_clear_error_and_creates_nothing(
    env: dict[str, str], tmp_path: Path, setting: dict[str, str], needle: str
) -> None:
    """Before: an empty STRONGROOM_DATABASE_URL quietly created ./strongroom.db."""
    work = tmp_path / "cwd"
    work.mkdir()
    flags: list[str] = []
    for name, value in setting.items():
        if name.startswith("--"):
            flags = [name, value]
        else:
            env[name] = value
    result = run(env, *flags, "secret", "set", "ns/s", "k=v", cwd=work)
    assert result.returncode == 1
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1
    assert list(work.iterdir()) == []


def test_the_database_it_creates_is_private(env: dict[str, str], tmp_path: Path) -> None:
    """Before: cli.db was created 0644, readable by every local user."""
    ok(env, "secret", "set", "ns/s", "k=v")
    assert stat.S_IMODE((tmp_path / "cli.db").stat().st_mode) == 0o600


def test_keygen_out_writes_a_private_key_file_and_never_overwrites(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "master.key"
    result = run(env, "keygen", "--out", str(path))
    assert result.returncode == 0
    assert result.stdout == ""  # the key went to the file only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    again = run(env, "keygen", "--out", str(path))
    assert again.returncode == 2
    assert path.read_text() == key
    del env["STRONGROOM_MASTER_KEY"]
    env["STRONGROOM_MASTER_KEY_FILE"] = str(path)
    ok(env, "secret", "set", "ns/s", "k=v")


def test_a_key_file_others_can_read_is_refused_with_the_chmod_to_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Before: a 0644 (even 0666) key file was used."""
    path = tmp_path / "master.key"
    path.write_text(KEY + "\n")
    path.chmod(0o644)
    del env["STRONGROOM_MASTER_KEY"]
    env["STRONGROOM_MASTER_KEY_FILE"] = str(path)
    result = run(env, "secret", "list")
    assert result.returncode == 1
    assert f"run `chmod 600 {path}`" in result.stderr
    assert KEY not in result.stderr
    path.chmod(0o600)
    ok(env, "secret", "list")


def test_a_missing_audit_head_row_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    """Before: "database error: NoResultFound" (on older code "internal error (NoResultFound)")."""
    ok(env, "secret", "set", "ns/s", "k=v")
    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("DELETE FROM audit_head")
    result = run(env, "secret", "set", "ns/s", "k=w")
    assert result.returncode == 1
    assert "the audit chain's head row is missing" in result.stderr
    assert "NoResultFound" not in result.stderr
    verify = run(env, "audit", "verify")
    assert verify.returncode == 1
    assert "the chain head row is missing" in verify.stderr


# --- no silent surprises (issue 15, item 3) -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "source"),
    [
        pytest.param(["pw="], "", "(pw=) is empty", id="literal"),
        pytest.param(["--from-file", "pw=-"], "", "(standard input) is empty", id="empty-stdin"),
        pytest.param(["--from-file", "pw=-"], "\n", "(standard input) is only line breaks",
                     id="newline-on-stdin"),
        pytest.param(["--from-file", "pw={empty}"], "", "/empty) is empty", id="empty-file"),
    ],
)  # fmt: skip
def test_an_empty_value_is_refused_unless_allow_empty(
    env: dict[str, str], tmp_path: Path, args: list[str], stdin: str, source: str
) -> None:
    """Before: ``echo "$UNSET" | strongroom secret set … --from-file pw=-`` stored "\\n" and the
    synced Secret followed, without a word."""
    (tmp_path / "empty").write_bytes(b"")
    args = [a.format(empty=tmp_path / "empty") for a in args]
    ok(env, "secret", "set", "ns/s", "pw=old")
    refused = run(env, "secret", "set", "ns/s", *args, stdin=stdin)
    assert refused.returncode == 2
    assert "the value of pw (" in refused.stderr
    assert source in refused.stderr
    assert "--allow-empty" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert ok(env, "secret", "get", "ns/s", "pw") == "old"
    ok(env, "secret", "set", "ns/s", *args, "--allow-empty", stdin=stdin)
    assert ok(env, "secret", "get", "ns/s", "pw") == stdin


def test_an_empty_json_string_is_stored_as_asked(env: dict[str, str]) -> None:
    ok(env, "secret", "set", "ns/s", 'pw:=""')
    assert json.loads(ok(env, "secret", "get", "ns/s", "--json"))["data"] == {"pw": ""}


def test_standard_input_feeds_one_key_only(env: dict[str, str]) -> None:
    """Before: the second ``KEY=-`` read an exhausted stdin and stored an empty value."""
    result = run(env, "secret", "set", "ns/s", "--from-file", "a=-", "--from-file", "b=-",
                 stdin="x")  # fmt: skip
    assert result.returncode == 2
    assert "standard input holds one value" in result.stderr
    assert "no secrets" in run(env, "secret", "list").stderr


def leaf_commands() -> set[tuple[str, ...]]:
    """Every command the parser runs (those with a handler), as their words."""
    from strongroom.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
        found = {prefix} if parser.get_default("handler") else set()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found |= walk(child, (*prefix, name))
        return found

    return walk(build_parser(), ())


# A valid invocation of each command that opens the store.
STORE_COMMANDS = {
    ("secret", "set"): ["ns/s", "k=v"], ("secret", "get"): ["ns/s"], ("secret", "list"): [],
    ("secret", "delete"): ["ns/s"], ("secret", "verify"): ["ns/s", "k"],
    ("secret", "history"): ["ns/s"], ("secret", "rebind"): ["ns/s"], ("audit", "verify"): [],
    ("audit", "tail"): [],
    ("audit", "checkpoint", "reset"): ["ns/cm", "--reason", "restored"],
    ("kek", "rotate"): ["--to", "local"], ("kek", "status"): [], ("rekey",): [], ("run",): [],
    ("serve",): ["--tls-secret", "ns/tls"],
    ("seal", "public-key"): [], ("seal", "rotate"): [], ("seal", "keys"): [],
    ("seal", "prune"): ["0011223344556677"], ("seal", "reseal"): ["absent.yaml"],
}  # fmt: skip
CREATE_STORE = {("db", "upgrade")}
# `seal value` and `seal import-sealedsecret` need the public key only (and the Bitnami key);
# `secret rotate` the kubeconfig only (it annotates the ManagedSecret).
NO_STORE = {("keygen",), ("seal", "value"), ("seal", "import-sealedsecret"), ("secret", "rotate")}


@pytest.mark.parametrize("command", sorted(STORE_COMMANDS), ids=" ".join)
def test_without_a_database_url_a_missing_default_store_is_an_error_not_a_new_one(
    env: dict[str, str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Before: any command run outside the store's directory created ./strongroom.db and read
    "not found" from it (or wrote a secret nobody else would see)."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    del env["STRONGROOM_DATABASE_URL"]
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    result = run(env, *command, *STORE_COMMANDS[command], stdin="v", cwd=work)
    assert result.returncode == 1
    assert result.stderr == (
        "strongroom: error: no store at ./strongroom.db; set STRONGROOM_DATABASE_URL or run "
        "strongroom db upgrade\n"
    )
    assert list(work.iterdir()) == []


def test_db_upgrade_creates_the_default_store_which_then_serves(
    env: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "here"
    work.mkdir()
    del env["STRONGROOM_DATABASE_URL"]
    assert "upgraded from empty" in run(env, "db", "upgrade", cwd=work).stdout
    assert stat.S_IMODE((work / "strongroom.db").stat().st_mode) == 0o600
    assert run(env, "secret", "set", "ns/s", "k=v", cwd=work).returncode == 0
    assert run(env, "secret", "get", "ns/s", "k", cwd=work).stdout == "v"


def test_every_command_is_in_the_missing_store_table() -> None:
    assert leaf_commands() == set(STORE_COMMANDS) | CREATE_STORE | NO_STORE


@dataclasses.dataclass(frozen=True)
class ExitCase:
    """One usage error (exit 2) and one failure (exit 1) of a command, with what each says."""

    usage: list[str]
    usage_says: str
    failure: list[str]
    failure_says: str
    failure_env: dict[str, str | None] = dataclasses.field(default_factory=dict)
    stdin: str = ""
    output_to_full_disk: bool = False


AHEAD = "999:" + "ab" * 32
GARBAGE_DB = {"STRONGROOM_DATABASE_URL": "sqlite:///{tmp}/garbage.db"}
NO_KUBECONFIG = {"KUBECONFIG": "{tmp}/no-kubeconfig"}
EXIT_CASES = {
    ("keygen",): ExitCase(["--out"], "expected one argument",
                          [], "No space left on device", output_to_full_disk=True),
    ("db", "upgrade"): ExitCase(["now"], "1 unexpected argument",
                                [], "file is not a database", GARBAGE_DB),
    ("secret", "set"): ExitCase(["ns/s", "novalue"], "KEY=VALUE", ["NS/s", "k=v"], "lowercase"),
    ("secret", "get"): ExitCase(["no-slash"], "NAMESPACE/NAME", ["ns/absent"], "not found"),
    ("secret", "list"): ExitCase(["a", "b"], "1 unexpected argument", ["NS"], "lowercase"),
    ("secret", "delete"): ExitCase([], "required: NS/NAME", ["ns/absent"], "not found"),
    ("secret", "verify"): ExitCase(["ns/s", "k", "--json"], "is not JSON",
                                   ["ns/absent", "k"], "not found", stdin="{"),
    ("secret", "history"): ExitCase([], "required: NS/NAME", ["ns/absent"], "not found"),
    ("secret", "rebind"): ExitCase(["ns"], "NAMESPACE/NAME", ["ns/absent"], "not found"),
    ("secret", "rotate"): ExitCase(["ns"], "NAMESPACE/NAME", ["ns/app"], "no Kubernetes access",
                                   NO_KUBECONFIG),
    ("audit", "verify"): ExitCase(["--expect", "nonsense"], "SEQ:MAC",
                                  ["--expect", AHEAD], "behind the checkpoint"),
    ("audit", "tail"): ExitCase(["-n", "0"], "positive", [], "no store at ./strongroom.db",
                                {"STRONGROOM_DATABASE_URL": None}),
    ("audit", "checkpoint", "reset"): ExitCase(["ns/cm"], "required: --reason",
                                               ["ns/cm", "--reason", "restored a backup"],
                                               "no Kubernetes access", NO_KUBECONFIG),
    ("kek", "rotate"): ExitCase(["--to", "nope"], "--to:",
                                ["--to", "vault:x"], "needs VAULT_ADDR", {"VAULT_ADDR": None}),
    ("kek", "status"): ExitCase(["extra"], "1 unexpected argument",
                                [], "file is not a database", GARBAGE_DB),
    ("rekey",): ExitCase(["--batch", "0"], "positive", [], "wrong STRONGROOM_MASTER_KEY",
                         {"STRONGROOM_MASTER_KEY": "4d" * 32}),
    ("run",): ExitCase(["-n", "a", "-A"], "not allowed with", [], "no Kubernetes access",
                       NO_KUBECONFIG),
    ("serve",): ExitCase(["--port", "https"], "--port", [], "the server needs TLS"),
    ("seal", "value"): ExitCase(["ns/s"], "required: KEY", ["ns/s", "k", "--public-key", "absent.json"],
                                "--public-key: cannot read absent.json", stdin="v"),
    ("seal", "public-key"): ExitCase(["extra"], "1 unexpected argument", [],
                                     "no sealing key yet"),
    ("seal", "rotate"): ExitCase(["--suite", "rsa"], "--suite", [], "file is not a database",
                                 GARBAGE_DB),
    ("seal", "keys"): ExitCase(["extra"], "1 unexpected argument", [], "file is not a database",
                               GARBAGE_DB),
    ("seal", "prune"): ExitCase([], "required: KEY_ID", ["0011223344556677"],
                                "no sealing key 0011223344556677"),
    ("seal", "reseal"): ExitCase([], "required: FILE", ["absent.yaml"], "cannot read absent.yaml"),
    ("seal", "import-sealedsecret"): ExitCase(
        ["s.yaml"], "required: --private-key",
        ["s.yaml", "--private-key", "k.pem", "--public-key", "p.json"],
        "--public-key: cannot read p.json"),
}  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding ns/s (k=v), made once; each test gets a copy."""
    path = tmp_path_factory.mktemp("seeded") / "cli.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_DATABASE_URL=f"sqlite:///{path}", STRONGROOM_MASTER_KEY=KEY)
    ok(env, "secret", "set", "ns/s", "k=v")
    return path


@pytest.mark.parametrize("command", sorted(EXIT_CASES), ids=" ".join)
def test_every_command_exits_2_for_bad_usage_and_1_for_a_failure(
    env: dict[str, str], tmp_path: Path, seeded: Path, command: tuple[str, ...]
) -> None:
    """The README's convention, command by command, through the installed console script.

    Before: ``strongroom run`` without a kubeconfig never exited (kopf's startup failed and the
    process hung), and ``keygen`` onto a full disk was an "internal error"."""
    case = EXIT_CASES[command]
    shutil.copy(seeded, tmp_path / "cli.db")
    (tmp_path / "garbage.db").write_bytes(b"not a database, " * 16)
    env["KUBECONFIG"] = str(tmp_path / "no-kubeconfig")
    work = tmp_path / "cwd"
    work.mkdir()

    usage = run(env, *command, *case.usage, stdin=case.stdin, cwd=work)
    assert (usage.returncode, usage.stdout) == (2, "")
    assert case.usage_says in usage.stderr.splitlines()[-1]

    for name, value in case.failure_env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value.format(tmp=tmp_path)
    if case.output_to_full_disk:
        with open("/dev/full", "w") as full:  # noqa: PTH123 - a device, not a path to build
            failure = subprocess.run([STRONGROOM, *command, *case.failure], env=env, stdout=full,
                                     stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                                     cwd=work)  # fmt: skip
    else:
        failure = run(env, *command, *case.failure, stdin=case.stdin, cwd=work)
    assert failure.returncode == 1, failure.stderr
    assert failure.stderr.count("\n") == 1, failure.stderr
    assert failure.stderr.startswith("strongroom: ")
    assert case.failure_says in failure.stderr
    assert "Traceback" not in usage.stderr + failure.stderr
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("group", [[], ["db"], ["secret"], ["audit"], ["audit", "checkpoint"],
                                   ["kek"], ["seal"]], ids=lambda g: " ".join(g) or "top")  # fmt: skip
def test_a_command_group_without_its_command_is_bad_usage(
    env: dict[str, str], group: list[str]
) -> None:
    result = run(env, *group)
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_every_command_is_in_the_exit_code_table() -> None:
    assert leaf_commands() == set(EXIT_CASES)


def every_command() -> list[tuple[str, ...]]:
    """Every command and command group of the parser (leaf_commands() below, and the groups
    on the way to them), so a new one is covered without being listed here."""
    found = {()}
    for leaf in leaf_commands():
        found |= {leaf[:i] for i in range(1, len(leaf) + 1)}
    return sorted(found)


@pytest.mark.parametrize("command", every_command(), ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(env: dict[str, str], command: tuple[str, ...]) -> None:
    result = run(env, *command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: strongroom")
