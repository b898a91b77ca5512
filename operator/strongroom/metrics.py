"""Prometheus metrics, defined once; every layer records into these, the operator serves them.

Names follow Prometheus conventions: counters end in ``_total`` when exposed, durations are in
seconds. Labels never carry secret names' values or anything derived from a value.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

KEK_CALLS = Counter(
    "strongroom_kek_calls",
    "Calls to the key-encryption key provider (wrap, unwrap, describe, rewrap).",
    ["provider", "op"],
)
KEK_ERRORS = Counter(
    "strongroom_kek_errors",
    "KEK calls that failed after retries, by provider, operation and cause.",
    ["provider", "op", "cause"],
)
KEK_LATENCY = Histogram(
    "strongroom_kek_call_seconds",
    "Latency of KEK provider calls, retries included.",
    ["provider", "op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@contextlib.contextmanager
def kek_call(provider: str, op: str) -> Iterator[None]:
    """Count and time one logical KEK call."""
    KEK_CALLS.labels(provider, op).inc()
    start = time.perf_counter()
    try:
        yield
    finally:
        KEK_LATENCY.labels(provider, op).observe(time.perf_counter() - start)


def kek_calls(provider: str, op: str) -> float:
    """Current count, for benchmarks and tests that check how often the KEK is called."""
    return float(KEK_CALLS.labels(provider, op)._value.get())


RECONCILES = Counter(
    "strongroom_reconciles", "ManagedSecret reconciles by outcome (reason).", ["outcome"]
)
RECONCILE_SECONDS = Histogram(
    "strongroom_reconcile_seconds", "Duration of one reconcile by outcome.", ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
SECRET_WRITES = Counter(
    "strongroom_secret_writes", "Writes of Kubernetes Secrets (create, replace, delete).", ["op"]
)
STORE_OPS = Counter("strongroom_store_ops", "Store operations by action and outcome.",
                    ["action", "outcome"])  # fmt: skip
STORE_SECONDS = Histogram(
    "strongroom_store_op_seconds", "Latency of store operations (audit included).", ["action"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)  # fmt: skip
EVENTS_POSTED = Counter(
    "strongroom_events_posted", "Kubernetes Events posted, by type (Normal, Warning).", ["type"]
)
EVENTS_FAILED = Counter(
    "strongroom_events_failed", "Kubernetes Events the apiserver refused or did not answer."
)
EVENTS_DROPPED = Counter(
    "strongroom_events_dropped", "Kubernetes Events dropped because the queue was full."
)
EVENTS_QUEUED = Gauge("strongroom_events_queued", "Kubernetes Events recorded and not yet posted.")
MANAGED = Gauge("strongroom_managed_secrets", "ManagedSecrets this operator tracks.")
REFRESH_LAG = Histogram(
    "strongroom_refresh_lag_seconds", "How late a scheduled reconcile started.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)  # fmt: skip
OLDEST_UNROTATED = Gauge(
    "strongroom_oldest_generated_value_age_seconds",
    "Age of the oldest generated value among the tracked ManagedSecrets.",
)
AUDIT_SINK_EVENTS = Counter(
    "strongroom_audit_sink_events",
    "Audit events an audit sink took (STRONGROOM_AUDIT_SINKS), by sink.",
    ["sink"],
)
AUDIT_SINK_FAILURES = Counter(
    "strongroom_audit_sink_failures",
    "Audit events an audit sink did not take, by sink: lost to that sink in best-effort mode; "
    "in require mode the operation failed unless another sink took them.",
    ["sink"],
)
AUDIT_CHECKPOINT_SEQ = Gauge(
    "strongroom_audit_checkpoint_seq",
    "Sequence number of the audit head this operator last published or found published as the "
    "checkpoint (0: none yet). It never goes down while the store is the same one.",
)
AUDIT_CHECKPOINT_CHECKED = Gauge(
    "strongroom_audit_checkpoint_checked_timestamp_seconds",
    "When the store was last found to reach the published audit checkpoint (Unix time).",
)
AUDIT_CHECKPOINT_MISMATCH = Gauge(
    "strongroom_audit_checkpoint_mismatch",
    "1 when the store does not reach the published audit checkpoint (an older, truncated, "
    "emptied or replaced database); the operator then does not reconcile.",
)
AUDIT_CHECKPOINT_ERRORS = Counter(
    "strongroom_audit_checkpoint_errors",
    "Reads (op=read) or writes (op=write) of the audit checkpoint the Kubernetes API refused or "
    "did not answer.",
    ["op"],
)
SEALED_KEY_OLD = Gauge(
    "strongroom_sealed_values_old_key",
    "Sealed values (ManagedSecret keys) whose sealing key is older than "
    "STRONGROOM_SEALING_KEY_MAX_AGE: to reseal (their ManagedSecrets say SealedKeyOld).",
)
SEALED_OPENED = Counter(
    "strongroom_sealed_opened",
    "Sealed values the operator opened, by outcome (ok, invalid).",
    ["outcome"],
)
CREDENTIAL_EXPIRY = Gauge(
    "strongroom_credential_expiry_timestamp_seconds",
    "When the database credential a ManagedSecret key holds expires (Unix time); it is renewed "
    "once two thirds of its TTL have passed.",
    ["namespace", "name", "key"],
)
