"""kopf handlers: the operator's lifecycle (start, stop) and its health probes.

kopf runs the process: its event loop, signals, the liveness endpoint and the probes. The
ManagedSecrets themselves are watched by the :class:`Runtime` (``operator/watching.py``), not
through kopf's resource handlers: those keep per-object bookkeeping (finalizers, progress and
diff-base annotations) and spend ≈ 0.3 ms of event-loop CPU on each watch event, where the
runtime needs one ``json.loads`` to tell a new generation from the echo of its own status write.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from strongroom.errors import StrongroomError
from strongroom.operator.runtime import Runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # kopf serves no resource here, so it need not follow CRDs and Namespaces appearing: no
    # cluster-wide list/watch of either, and the chart grants none (least privilege, measured).
    settings.scanning.disabled = True
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


@kopf.on.probe(id="audit")
async def audit_probe(memo: Any, **_: Any) -> str:
    """Part of /healthz: the store reaches the audit checkpoint published outside it (an older,
    truncated, emptied or replaced database fails the probe; operator/checkpoint.py)."""
    runtime: Runtime = memo["runtime"]
    try:
        return await runtime.check_audit()
    except StrongroomError as exc:
        # Permanent: kopf would otherwise retry the probe with backoff and hold /healthz.
        raise kopf.PermanentError(str(exc)) from None
