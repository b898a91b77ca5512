"""``strongroom run``: start kopf with Strongroom's handlers (and, with several replicas, the
leader election)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket

import kopf

from strongroom.config import OperatorTuning, Settings
from strongroom.errors import StrongroomError
from strongroom.operator.checkpoint import resolve as resolve_checkpoint
from strongroom.operator.leader import LeaseRef
from strongroom.operator.runtime import Runtime
from strongroom.server.flags import ServeOptions


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
    leader_elect: str | None = None,
    verbose: bool = False,
    metrics_port: int | None = None,
    audit_checkpoint: str | None = None,
    trust_namespace_names: bool = False,
    serve: ServeOptions | None = None,
) -> None:
    import strongroom.operator.handlers  # noqa: F401 - registers the handlers

    tuning = OperatorTuning.from_env()
    handler = logging.StreamHandler()
    if tuning.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("kubernetes", "urllib3", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # kopf says "Handler 'observe' succeeded" for every watch event: two lines per new
        # object, with nothing the operator's own log line does not already say.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    lease = LeaseRef.parse(leader_elect, os.environ.get("POD_NAMESPACE")) if leader_elect else None
    checkpoint = resolve_checkpoint(
        tuning.audit_checkpoint if audit_checkpoint is None else audit_checkpoint,
        os.environ.get("POD_NAMESPACE"),
    )
    if checkpoint is None:
        logging.getLogger("strongroom.operator").warning(
            "audit checkpoint off: a restored older database will go unnoticed (give "
            "--audit-checkpoint NAMESPACE/NAME, or run with POD_NAMESPACE set)"
        )
    trust_names = trust_namespace_names or tuning.trust_namespace_names
    if trust_names:
        logging.getLogger("strongroom.operator").warning(
            "namespace identity not checked (--trust-namespace-names): stored values go to "
            "whichever namespace has their namespace's name, also one deleted and created "
            "again by someone else; meant for a restored cluster or several clusters sharing "
            "one store"
        )
    actor = operator_actor()
    runtime = Runtime(dataclasses.replace(settings, actor=actor), namespaces=namespaces,
                      actor=actor, store_poll=tuning.store_poll_seconds,
                      workers=tuning.reconcile_workers, api_timeout=tuning.api_timeout_seconds,
                      lease=lease, lease_seconds=tuning.lease_seconds,
                      rollout_restart=tuning.rollout_restart, checkpoint=checkpoint,
                      checkpoint_seconds=tuning.audit_checkpoint_seconds,
                      trust_namespace_names=trust_names,
                      database_engines=tuning.database_engines)  # fmt: skip
    operator = kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,  # replicas coordinate through the Lease, not kopf's peering
        liveness_endpoint=liveness,
        memo=kopf.Memo(runtime=runtime),
        stop_flag=runtime.exit_flag,
    )
    if serve is None:
        asyncio.run(operator)
    else:  # the values API in this event loop, on the operator's store (SQLite: one owner)
        from strongroom.server.serve import alongside

        asyncio.run(alongside(operator, lambda: runtime.room, serve))
    if runtime.audit_failure:
        raise StrongroomError(f"{runtime.audit_failure}; stopped reconciling and exiting")
    if runtime.lost_leadership:
        raise StrongroomError(
            f"lost the leadership of Lease {lease}; exiting so that this replica restarts as a "
            "follower"
        )
