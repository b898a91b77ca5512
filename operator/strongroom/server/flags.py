"""The server's flags, apart from the server: the CLI's parser imports this without aiohttp.

:func:`register` adds ``strongroom serve`` and ``run --serve`` to the CLI's parsers, so
``cli.py`` only calls it; the handlers import the server when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from strongroom.config import Settings
from strongroom.errors import ConfigError

MAX_CACHE_SECONDS = 5.0
"""Longest a TokenReview or SubjectAccessReview answer is kept (:mod:`.auth`)."""


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    address: str = "0.0.0.0"  # noqa: S104 - a server in a pod listens on its pod's address
    port: int = 8443
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_secret: str | None = None
    tls_sans: tuple[str, ...] = ()
    accept_default_audiences: bool = False
    cache_seconds: float = MAX_CACHE_SECONDS
    rate: float = 20.0
    burst: int = 40


def add_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """The server's flags; ``prefix="serve-"`` names them for ``run --serve``."""

    def flag(name: str) -> str:
        return f"--{prefix}{name}"

    parser.add_argument(flag("address"), default="0.0.0.0", metavar="ADDR",  # noqa: S104
                        help="address to listen on (default 0.0.0.0)")  # fmt: skip
    parser.add_argument(flag("port"), type=int, default=8443, metavar="PORT",
                        help="HTTPS port (default 8443)")  # fmt: skip
    parser.add_argument(flag("tls-cert-file"), metavar="PATH", help="PEM certificate (with "
                        "--tls-key-file), e.g. a cert-manager Secret mounted as files")  # fmt: skip
    parser.add_argument(flag("tls-key-file"), metavar="PATH", help="PEM private key")
    parser.add_argument(flag("tls-secret"), metavar="[NS/]NAME", help="a kubernetes.io/tls "
                        "Secret; a self-signed certificate is generated into it if it does "
                        "not exist (namespace: POD_NAMESPACE)")  # fmt: skip
    parser.add_argument(flag("tls-san"), action="append", metavar="NAME",
                        help="a name or IP of the self-signed certificate (repeatable)")  # fmt: skip
    parser.add_argument(flag("accept-default-audiences"), action="store_true",
                        help="also accept tokens for the apiserver's own audiences, not only "
                             "for the audience strongroom")  # fmt: skip
    parser.add_argument(flag("decision-cache-seconds"), type=float, default=MAX_CACHE_SECONDS,
                        metavar="S", help="how long TokenReview/SubjectAccessReview answers "
                        f"are kept (0 to {MAX_CACHE_SECONDS:g})")  # fmt: skip
    parser.add_argument(flag("rate"), type=float, default=20.0, metavar="PER_S",
                        help="requests per second per identity (default 20)")  # fmt: skip
    parser.add_argument(flag("burst"), type=int, default=40, metavar="N",
                        help="requests an identity may make at once (default 40)")  # fmt: skip


def options_from(args: argparse.Namespace, *, prefix: str = "") -> ServeOptions:
    def get(name: str) -> object:
        return getattr(args, f"{prefix}{name}".replace("-", "_"))

    cert, key, secret = get("tls-cert-file"), get("tls-key-file"), get("tls-secret")
    if (cert is None) != (key is None):
        raise ConfigError(f"--{prefix}tls-cert-file and --{prefix}tls-key-file go together")
    if cert is None and secret is None:
        raise ConfigError(f"the server needs TLS: give --{prefix}tls-cert-file and "
                          f"--{prefix}tls-key-file, or --{prefix}tls-secret")  # fmt: skip
    cache = float(get("decision-cache-seconds"))  # type: ignore[arg-type]
    if not 0 <= cache <= MAX_CACHE_SECONDS:
        raise ConfigError(f"--{prefix}decision-cache-seconds must be 0 to {MAX_CACHE_SECONDS:g}")
    rate, burst = float(get("rate")), int(get("burst"))  # type: ignore[arg-type, call-overload]
    if rate <= 0 or burst < 1:
        raise ConfigError(f"--{prefix}rate must be above 0 and --{prefix}burst at least 1")
    return ServeOptions(
        address=str(get("address")), port=int(get("port")),  # type: ignore[call-overload]
        tls_cert_file=cert, tls_key_file=key, tls_secret=secret,  # type: ignore[arg-type]
        tls_sans=tuple(get("tls-san") or ()),  # type: ignore[arg-type]
        accept_default_audiences=bool(get("accept-default-audiences")),
        cache_seconds=cache, rate=rate, burst=burst,
    )  # fmt: skip


def register(
    sub: argparse._SubParsersAction[Any],
    run: argparse.ArgumentParser,
    settings: Callable[[argparse.Namespace], Settings],
) -> None:
    """``strongroom serve``, and ``--serve`` with its ``--serve-*`` flags on ``run``."""
    serve = sub.add_parser(
        "serve",
        help="serve the values API (HTTPS, Kubernetes tokens and RBAC)",
        description=(
            "Serve the values API: tenants and pipelines set and read values with their "
            "Kubernetes identity (TokenReview) and RBAC (SubjectAccessReview on "
            "managedsecrets/values in strongroom.io). For PostgreSQL stores; on SQLite use "
            "`strongroom run --serve`."
        ),
    )
    add_arguments(serve)

    def cmd_serve(args: argparse.Namespace) -> int:
        from strongroom.server.serve import serve as serve_forever

        serve_forever(settings(args), options_from(args))
        return 0

    serve.set_defaults(handler=cmd_serve)
    run.add_argument("--serve", action="store_true",
                     help="also serve the values API in this process (for SQLite stores); "
                          "--serve-port, --serve-tls-secret… as `strongroom serve` has them")  # fmt: skip
    add_arguments(run, prefix="serve-")


def run_options(args: argparse.Namespace) -> ServeOptions | None:
    """The server's options for ``run --serve``; None without ``--serve``."""
    return options_from(args, prefix="serve-") if args.serve else None
