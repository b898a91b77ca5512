"""kopf handlers: thin, they hand every ManagedSecret event to the :class:`Runtime`.

One raw event handler and no change-detecting ones: kopf then keeps no finalizer, progress or
diff-base annotation of its own, so a new ManagedSecret costs the API its Secret, its status and
an Event, not three more patches of kopf's bookkeeping. The runtime decides what an event means
(a new generation to reconcile, a deletion to finalize, an echo of its own status write) and
adds Strongroom's finalizer only where a deletion needs work that garbage collection cannot do.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from strongroom.errors import StrongroomError
from strongroom.operator.runtime import Runtime
from strongroom.sync import GROUP, PLURAL, VERSION


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base (a deep copy of the body) for every event, even when, as here,
    no create/update handler could use it; this storage builds, keeps and stores nothing."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.persistence.diffbase_storage = NoDiffBase()
    # The handler only files the event with the runtime, so kopf's per-object workers are
    # short-lived; the bound keeps a burst of thousands of new objects from holding thousands
    # of coroutines at once.
    settings.queueing.worker_limit = memo["worker_limit"]
    settings.queueing.idle_timeout = 0.1
    runtime: Runtime = memo["runtime"]
    try:
        await runtime.start()
    except StrongroomError as exc:
        raise kopf.PermanentError(str(exc)) from None


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo["runtime"].stop()


@kopf.on.probe(id="store")
async def store_probe(memo: Any, **_: Any) -> str:
    """Part of /healthz: the store answers (an unreachable database fails the probe)."""
    runtime: Runtime = memo["runtime"]
    return await runtime.check_store()


@kopf.on.probe(id="kek")
async def kek_probe(memo: Any, **_: Any) -> str:
    """Part of /healthz: a seed for writes is available (so the KEK worked at least once)."""
    runtime: Runtime = memo["runtime"]
    return await runtime.check_kek()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def observe(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:  # noqa: A002 - kopf's keyword
    runtime: Runtime = memo["runtime"]
    runtime.observe(type, body)
