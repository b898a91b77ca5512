"""kopf handlers: thin, they hand every ManagedSecret to the :class:`Runtime`.

kopf is configured once at startup: the finalizer ``strongroom.io/finalizer``, progress and
diff-base annotations under ``strongroom.io``, and kopf's own Events only for warnings. Status
is written by the runtime, not through handler return values, so refreshes that change nothing
write nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from strongroom.errors import StrongroomError
from strongroom.operator.runtime import Runtime
from strongroom.sync import GROUP, PLURAL, VERSION

FINALIZER = "strongroom.io/finalizer"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="strongroom.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="strongroom.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Bound kopf's per-object workers: a burst of thousands of new objects then queues instead
    # of holding thousands of bodies and coroutines in memory at once.
    settings.batching.worker_limit = memo["worker_limit"]
    settings.batching.idle_timeout = 2.0
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


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(name: str, namespace: str | None, body: Any, memo: Any, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    await runtime.sync((namespace or "", name), dict(body))


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    try:
        done = await runtime.finalize(dict(body))
    except StrongroomError as exc:
        raise kopf.TemporaryError(f"cannot finalize: {exc}", delay=10) from None
    logger.info("deletionPolicy applied: %s", done)
