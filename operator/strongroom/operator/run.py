"""``strongroom run``: start kopf with Strongroom's handlers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket

import kopf

from strongroom.config import Settings
from strongroom.operator.runtime import Runtime


class JsonFormatter(logging.Formatter):
    """One JSON object per line (STRONGROOM_LOG_FORMAT=json), for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def operator_actor() -> str:
    """Who the audit log names for the operator's own actions."""
    explicit = os.environ.get("STRONGROOM_ACTOR")
    if explicit:
        return explicit
    namespace = os.environ.get("POD_NAMESPACE")
    account = os.environ.get("STRONGROOM_SERVICE_ACCOUNT")
    if namespace and account:
        return f"system:serviceaccount:{namespace}:{account}"
    return f"strongroom-operator@{socket.gethostname()}"


def run(
    settings: Settings,
    *,
    namespaces: list[str],
    liveness: str | None = None,
    peering: str | None = None,
    verbose: bool = False,
    metrics_port: int | None = None,
) -> None:
    import strongroom.operator.handlers  # noqa: F401 - registers the handlers

    handler = logging.StreamHandler()
    if os.environ.get("STRONGROOM_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("kubernetes", "urllib3", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    actor = operator_actor()
    poll = float(os.environ.get("STRONGROOM_STORE_POLL_SECONDS") or 2)
    # kopf workers at once (0: unbounded); 256 keeps a 10,000-object burst near 300 MiB.
    worker_limit = int(os.environ.get("STRONGROOM_WORKER_LIMIT") or 256) or None
    runtime = Runtime(dataclasses.replace(settings, actor=actor), namespaces=namespaces,
                      actor=actor, store_poll=poll)  # fmt: skip
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=peering is None,
            peering_name=peering,
            liveness_endpoint=liveness,
            memo=kopf.Memo(runtime=runtime, worker_limit=worker_limit),
        )
    )
