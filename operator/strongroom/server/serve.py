"""The process: ``strongroom serve`` (its own, for PostgreSQL) and ``strongroom run --serve``
(inside the operator's event loop, for SQLite, where one process owns the file).

The flags are in :mod:`.flags` (importable without aiohttp, for the CLI's parser).
Shutdown is graceful: on SIGTERM the listener closes, requests in flight finish (up to
``SHUTDOWN_SECONDS``), then the store closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from strongroom.api import Strongroom
from strongroom.config import Settings
from strongroom.errors import ConfigError
from strongroom.server import tls
from strongroom.server.auth import Reviewer
from strongroom.server.flags import ServeOptions
from strongroom.server.ratelimit import RateLimiter
from strongroom.server.routes import Server, application

SHUTDOWN_SECONDS = 20.0
log = logging.getLogger("strongroom.server")


def kube_client() -> k8s.ApiClient:
    """The in-cluster ServiceAccount, or KUBECONFIG / ~/.kube/config (exec plugins included)."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config(client_configuration=configuration)
        except (k8s_config.ConfigException, OSError) as exc:
            raise ConfigError(f"no Kubernetes credentials for the server: {exc}") from None
    return k8s.ApiClient(configuration)


def key_pair(options: ServeOptions, api: k8s.ApiClient) -> tls.KeyPair:
    if options.tls_cert_file and options.tls_key_file:
        return tls.from_files(options.tls_cert_file, options.tls_key_file)
    assert options.tls_secret is not None  # noqa: S101 - options_from checked
    namespace, _, name = options.tls_secret.rpartition("/")
    namespace = namespace or os.environ.get("POD_NAMESPACE", "")
    if not namespace:
        raise ConfigError("--tls-secret: give NAMESPACE/NAME, or set POD_NAMESPACE")
    sans = options.tls_sans or ("localhost", "127.0.0.1", socket.gethostname())
    return tls.from_secret(k8s.CoreV1Api(api), namespace, name, sans)


async def start(
    room: Callable[[], Strongroom | None], options: ServeOptions, api: k8s.ApiClient
) -> web.AppRunner:
    """Listen on ``options`` in the running event loop; stop with ``runner.cleanup()``."""
    pair = await asyncio.to_thread(key_pair, options, api)
    server = Server(
        room=room,
        reviewer=Reviewer(api, cache_seconds=options.cache_seconds,
                          accept_default_audiences=options.accept_default_audiences),
        limiter=RateLimiter(options.rate, options.burst),
    )  # fmt: skip
    runner = web.AppRunner(
        application(server),
        access_log=None,  # paths may hold names only,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )  # but log none: our metrics count
    await runner.setup()
    site = web.TCPSite(runner, options.address, options.port,
                       ssl_context=tls.server_context(pair))  # fmt: skip
    await site.start()
    log.info("values API listening on https://%s:%d", options.address, options.port)
    return runner


async def alongside(
    work: Coroutine[Any, Any, None], room: Callable[[], Strongroom | None], options: ServeOptions
) -> None:
    """Serve while ``work`` (the operator) runs in this loop; stop serving when it ends."""
    api = await asyncio.to_thread(kube_client)
    runner = await start(room, options, api)
    try:
        await work
    finally:
        await runner.cleanup()
        api.close()


def serve(settings: Settings, options: ServeOptions) -> None:
    """``strongroom serve``: the API alone, until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    room = Strongroom.open(settings)
    room.group_commit()  # SQLite: concurrent requests share transactions (PostgreSQL: no-op)
    api = kube_client()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = await start(lambda: room, options, api)
        try:
            await stop.wait()
        finally:
            log.info("values API stopping: finishing requests in flight")
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        room.close()
        api.close()
