"""Reading the audit log: verification of the whole chain, the checkpoint published outside
the store and the check of the store against it, and the events themselves."""

from __future__ import annotations

import builtins
import hmac
from collections.abc import Iterator
from datetime import datetime

from strongroom.audit import (
    AuditEvent,
    ChainHead,
    ChainKey,
    ChainReport,
    Checkpoint,
    checkpoint_of,
    checkpoint_problem,
    verify_chain,
)
from strongroom.errors import (
    IntegrityError,
)
from strongroom.room.calls import AuditedCalls
from strongroom.store import repository as repo


class AuditLogReads(AuditedCalls):
    """The audit log's calls of :class:`strongroom.api.Strongroom`."""

    def audit_verify(self) -> ChainReport:
        """Check every link and the head with the audit key (format: :mod:`strongroom.audit`).

        Raises :class:`IntegrityError` when the audit key row itself is unusable (two of them,
        or one naming a KEK outside the configured set), and a keyring error when the KEK
        cannot unwrap it.
        """
        stored = self.audit_key.stored()
        with self.engine.connect() as conn:
            head = repo.audit_chain_head(conn)
            if head is None:
                return ChainReport(False, 0, 1, "the chain head row is missing")
            key, first_seq = stored if stored is not None else (None, 1)
            report = verify_chain(repo.iter_audit(conn), head=head, key=key, keyed_from=first_seq)
            if report.ok and report.count == 0 and repo.has_data_keys(conn):
                # Creating a data key is audited, so it always leaves an event behind.
                return ChainReport(
                    False, 0, 1, "the log is empty but the store holds data keys: it was emptied"
                )
            return report

    def audit_checkpoint(self) -> Checkpoint | None:
        """The chain's current head as a checkpoint (:mod:`strongroom.audit`), to publish
        outside the store; None while the chain has no audit key (nothing keyed to publish).

        Raises :class:`IntegrityError` when the head row does not authenticate: a rewritten
        head is never published.
        """
        stored = self.audit_key.stored()
        if stored is None:
            return None
        key = stored[0]
        with self.engine.connect() as conn:
            head = repo.audit_chain_head(conn)
        if head is None or not hmac.compare_digest(head.mac, key.head(head.seq, head.hash)):
            raise IntegrityError("the audit chain head does not authenticate")
        return checkpoint_of(key, head)

    def audit_check_checkpoint(self, checkpoint: Checkpoint) -> str | None:
        """Why this store does not reach ``checkpoint``, in one line; None when it does.

        Reads the head and the event at the checkpoint, then walks every link this object has
        not walked yet up to the head: the whole chain the first time (at an operator's start),
        then only what was appended since (each interval). So a restored backup with the live
        head and later events copied over it is caught, not only a head that moved back. Edits
        of events already walked are caught at the next start or by :meth:`audit_verify`.
        Neither moves the checkpoint.
        """
        stored = self.audit_key.stored()
        with self.engine.connect() as conn:
            head = repo.audit_chain_head(conn)
            link = repo.audit_link_at(conn, checkpoint.seq)
        if head is None:
            return "the store's audit chain head row is missing"
        key = None if stored is None else stored[0]
        problem = checkpoint_problem(checkpoint, head=head, link=link, key=key)
        if (
            problem is None
            and key is not None
            and not hmac.compare_digest(head.mac, key.head(head.seq, head.hash))
        ):
            problem = (
                "the store's audit chain head does not authenticate: events after it were "
                "deleted or the head was rewritten"
            )
        if problem is None and stored is not None:
            problem = self._walk_new_links(head, *stored)
        return problem

    def _walk_new_links(self, head: ChainHead, key: ChainKey, keyed_from: int) -> str | None:
        """Walk from the last link walked (``_walked``) to ``head``; why it fails, or None."""
        since = self._walked
        with self.engine.connect() as conn:
            if since[0] and repo.audit_link_at(conn, since[0]) != since[1]:
                return (
                    f"event {since[0]} of the audit chain, checked before, was changed or removed"
                )
            report = verify_chain(repo.iter_audit(conn, after=since[0], upto=head.seq),
                                  head=head, key=key, keyed_from=keyed_from, since=since)  # fmt: skip
        if not report.ok:
            return (
                f"the store's audit chain does not verify at event {report.first_bad_seq}: "
                f"{report.reason}"
            )
        self._walked = (head.seq, head.hash)
        return None

    def audit_tail(self, count: int = 20) -> builtins.list[AuditEvent]:
        with self.engine.connect() as conn:
            return repo.audit_tail(conn, count)

    def audit_recorded(self, action: str, namespace: str, name: str, *,
                       since: datetime) -> AuditEvent | None:  # fmt: skip
        """The newest ``action`` event on ``namespace``/``name`` since ``since``, if one is among
        the last 10 000 events: whether something done once was recorded already."""
        with self.engine.connect() as conn:
            return repo.audit_find_recent(conn, action=action, namespace=namespace, name=name,
                                          since=since, window=10_000)  # fmt: skip

    def audit_events(self) -> Iterator[AuditEvent]:
        with self.engine.connect() as conn:
            yield from repo.iter_audit(conn)
