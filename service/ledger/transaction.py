"""The write side's transaction: one global lock, the seq counter, event appends, idempotency."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from service.domain.clock import utcnow
from service.domain.errors import ValidationFailed
from service.domain.events import LedgerEvent, OverrideExpired
from service.ledger import idempotency
from service.reads.state import load_user
from service.runtime.database import WRITE_OPTION
from service.runtime.extensions import db
from service.runtime.models import Event, IdempotencyRecord, LedgerHead, Override

SYSTEM_ACTOR = ("system:expiry", "system")

HEAD_ID = 1


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is changing the ledger: the key's name and role, and the request it came in."""

    name: str
    role: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRequest:
    """An Idempotency-Key and the fingerprint of the request it was sent with."""

    key: str
    method: str
    path: str
    fingerprint: str

    @classmethod
    def of(cls, key: str, method: str, path: str, body: Any) -> IdempotencyRequest:
        """Fingerprint method, path and canonical JSON body."""
        canonical = json.dumps([method, path, body], sort_keys=True, default=str)
        return cls(key, method, path, hashlib.sha256(canonical.encode()).hexdigest())


@dataclass(slots=True)
class Replay:
    """A stored first answer to return instead of doing the work again."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class LedgerWrite:
    """One write transaction: serialised with all other writers, appending numbered events.

    Entering locks the ledger head row, so seqs are handed out in commit order on every backend:
    a reader that has seen seq S can never later find a new event numbered S or lower. Leaving
    without an exception writes the new head and commits once; any exception rolls back all of it.
    """

    def __init__(self, actor: Actor, idempotency: IdempotencyRequest | None = None) -> None:
        self.actor = actor
        self.idempotency = idempotency
        self.replay: Replay | None = None
        self.events: list[Event] = []
        self._head = 0
        self.locked_seq = 0  # the head when the lock was taken: every event up to it committed
        self.at: datetime = utcnow()

    def __enter__(self) -> LedgerWrite:
        row = lock_head()
        self._head = self.locked_seq = row.seq
        # Event times never go backwards, so "as of time T" maps to one seq.
        now = utcnow()
        self.at = max(now, row.at) if row.at is not None else now
        if self.idempotency is not None:
            self.replay = self._find_replay(self.idempotency)
        if self.replay is None:
            self._expire_due_overrides()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = db.session
        if exc_type is not None:
            session.rollback()
            return
        try:
            if self.events:
                session.execute(
                    sa.update(LedgerHead)
                    .where(LedgerHead.id == HEAD_ID)
                    .values(seq=self._head, at=self.at)
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise

    @property
    def head(self) -> int:
        """The last seq handed out, including this transaction's own events."""
        return self._head

    def append(
        self,
        event: LedgerEvent,
        *,
        before: str | None = None,
        after: str | None = None,
        reason: str | None = None,
        ticket: str | None = None,
        actor: tuple[str, str] | None = None,
    ) -> Event:
        """Append one event with the next seq; it commits with the state change or not at all.

        `before` and `after` are the effective states of (user, purpose) around the event.
        """
        self._head += 1
        name, role = actor or (self.actor.name, self.actor.role)
        row = Event(
            seq=self._head,
            at=self.at,
            kind=event.kind.value,
            user_id=event.user_id,
            purpose=event.purpose,
            before=before,
            after=after,
            actor=name,
            role=role,
            reason=reason,
            ticket=ticket,
            request_id=self.actor.request_id,
            data=event.to_data(),
        )
        db.session.add(row)
        self.events.append(row)
        return row

    def remember(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Store the answer under the Idempotency-Key so that a retry gets it back unchanged."""
        idem = self.idempotency
        if idem is None:
            return
        db.session.add(
            IdempotencyRecord(
                key_name=self.actor.name,
                idempotency_key=idem.key,
                method=idem.method,
                path=idem.path,
                request_hash=idem.fingerprint,
                status_code=status,
                response=body,
                headers=headers,
                created_at=self.at,
            )
        )

    def _expire_due_overrides(self) -> None:
        """Record every override whose expiry has passed as an override_expired event.

        Resolution already ignores an override past its expiry (judged at each event's time);
        the event is what tells a change-feed consumer, and it comes before this transaction's
        own events so each event's `before` equals the previous event's `after`.
        """
        due = db.session.execute(
            sa.select(Override)
            .where(
                Override.lifted_seq.is_(None),
                Override.expired_seq.is_(None),
                Override.expires_at <= self.at,
            )
            .order_by(Override.expires_at, Override.id)
        ).scalars()
        for override in list(due):
            assert override.expires_at is not None
            view = load_user(override.user_id)
            just_before = override.expires_at - timedelta(microseconds=1)
            override.expired_seq = self._head + 1
            self.append(
                OverrideExpired(
                    user_id=override.user_id,
                    purpose=override.purpose,
                    override_id=override.id,
                    expires_at=override.expires_at,
                ),
                before=view.resolve(override.purpose, self._head, just_before).state,
                after=view.resolve(override.purpose, self._head + 1, self.at).state,
                actor=SYSTEM_ACTOR,
            )

    def _find_replay(self, idem: IdempotencyRequest) -> Replay | None:
        record = db.session.execute(
            sa.select(IdempotencyRecord).where(
                IdempotencyRecord.key_name == self.actor.name,
                IdempotencyRecord.idempotency_key == idem.key,
            )
        ).scalar_one_or_none()
        if record is None:
            return None
        if idempotency.expired(record.created_at, self.at):
            # Past the TTL the key is free again, whether or not the sweeper has pruned the old
            # answer yet; delete it now so this write's answer can take its place.
            db.session.execute(
                sa.delete(IdempotencyRecord).where(IdempotencyRecord.id == record.id)
            )
            return None
        if record.request_hash != idem.fingerprint:
            raise ValidationFailed(
                "This Idempotency-Key was already used with a different request; "
                "use a new key for a new request.",
                errors={"Idempotency-Key": ["Reused with a different request."]},
            )
        return Replay(record.status_code, dict(record.response), dict(record.headers))


def lock_head() -> sa.Row[int, datetime | None]:
    """Start a write transaction by locking the ledger head; return its seq and time.

    Until commit or rollback no other writer can hand out a seq, on either backend.
    """
    session = db.session
    if session().in_transaction():
        # Whatever this request read so far was a different snapshot; writes start afresh.
        session.rollback()
    session.connection(execution_options={WRITE_OPTION: True})
    return session.execute(
        sa.update(LedgerHead)
        .where(LedgerHead.id == HEAD_ID)
        .values(seq=LedgerHead.seq)
        .returning(LedgerHead.seq, LedgerHead.at)
    ).one()
