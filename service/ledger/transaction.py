"""The write side's transaction: one global lock, the seq counter, event appends, idempotency."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NamedTuple

import sqlalchemy as sa

from service.domain.clock import utcnow
from service.domain.errors import ValidationFailed
from service.domain.events import LedgerEvent, OverrideExpired
from service.ledger import idempotency
from service.ledger.write_cache import SharedFacts, next_expiry, write_cache
from service.reads.state import load_user
from service.runtime.database import WRITE_OPTION
from service.runtime.extensions import db
from service.runtime.models import Event, IdempotencyRecord, LedgerHead, Override, table
from service.runtime.plain_sql import Driver, PlainStatement

SYSTEM_ACTOR = ("system:expiry", "system")

HEAD_ID = 1
# Every column of an event row, in the table's order.
EVENT_COLUMNS = tuple(c.name for c in table(Event).columns)


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
        self.facts: SharedFacts | None = None  # the worker's facts, caught up to locked_seq
        self._driver: Driver | None = None  # the driver connection of this transaction
        self._rows: list[dict[str, Any]] = []  # events appended in bulk, inserted at commit
        self._staged: list[tuple[PlainStatement, list[dict[str, Any]]]] = []
        self._next_expiry: tuple[SharedFacts, datetime | None] | None = None

    def __enter__(self) -> LedgerWrite:
        self.lock()
        try:
            self.catch_up()
            if self.idempotency is not None:
                self.replay = find_replay(self.actor.name, self.idempotency, self.at)
            if self.replay is None:
                self.expire_due_overrides()
        except BaseException:
            db.session.rollback()  # __exit__ is not called when __enter__ raises
            raise
        return self

    def lock(self) -> None:
        """Take the head lock: from here on this transaction hands out the next seqs."""
        self._head, last, self._driver = lock_head()
        self.locked_seq = self._head
        # Event times never go backwards, so "as of time T" maps to one seq.
        now = utcnow()
        self.at = max(now, last) if last is not None else now

    @property
    def driver(self) -> Driver:
        """The driver connection of this transaction (once the lock is taken)."""
        assert self._driver is not None, "the head is not locked yet"
        return self._driver

    def catch_up(self) -> None:
        """Bring the worker's shared facts (policies, restrictions, the next override expiry)
        to the locked head."""
        self.facts = write_cache().catch_up(self.locked_seq, self.driver)

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
            if self._rows or self._staged or self._head != self.locked_seq:
                session.flush()  # the ORM's rows (an expired override, say) before the events
                driver = self.driver
                for statement, rows in self._staged:
                    driver.executemany(statement, rows)
                if self._rows:
                    driver.executemany(APPEND_EVENT, self._rows)
                if self._head != self.locked_seq:
                    driver.execute(MOVE_HEAD, {"seq": self._head, "at": self.at}).close()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        if self._next_expiry is not None:
            write_cache().expired(*self._next_expiry)

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
        row = Event(**self._row(event, before, after, reason, ticket, actor, None))
        db.session.add(row)
        self.events.append(row)
        return row

    def append_bulk(
        self,
        event: LedgerEvent,
        *,
        before: str | None,
        after: str | None,
        actor: Actor,
    ) -> int:
        """Append one event with the next seq, written with the others in one statement at
        commit (for many events; nothing in this transaction reads it back); return its seq.

        The actor, and the request it names, are the event's own (one transaction may carry
        the writes of several requests).
        """
        row = self._row(event, before, after, None, None, (actor.name, actor.role), actor)
        self._rows.append(row)
        return int(row["seq"])

    def stage(self, statement: PlainStatement, rows: list[dict[str, Any]]) -> None:
        """Rows to write at commit, before the events (nothing in this transaction may read
        them back before)."""
        if rows:
            self._staged.append((statement, rows))

    def _row(
        self,
        event: LedgerEvent,
        before: str | None,
        after: str | None,
        reason: str | None,
        ticket: str | None,
        actor: tuple[str, str] | None,
        request: Actor | None,
    ) -> dict[str, Any]:
        self._head += 1
        name, role = actor or (self.actor.name, self.actor.role)
        return {
            "seq": self._head,
            "at": self.at,
            "kind": event.kind.value,
            "user_id": event.user_id,
            "purpose": event.purpose,
            "before": before,
            "after": after,
            "actor": name,
            "role": role,
            "reason": reason,
            "ticket": ticket,
            "request_id": (request or self.actor).request_id,
            "data": event.to_data(),
        }

    def remember(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Store the answer under the Idempotency-Key so that a retry gets it back unchanged."""
        if self.idempotency is not None:
            db.session.add(
                IdempotencyRecord(
                    **idempotency_record(
                        self.actor.name, self.idempotency, self.at, status, body, headers
                    )
                )
            )

    def expire_due_overrides(self) -> None:
        """Record every override whose expiry has passed as an override_expired event.

        Resolution already ignores an override past its expiry (judged at each event's time);
        the event is what tells a change-feed consumer, and it comes before this transaction's
        own events so each event's `before` equals the previous event's `after`. The worker's
        shared facts say when one may be due; only then are the overrides looked through.
        """
        facts = self.facts
        assert facts is not None
        if not facts.expiry_due(self.at):
            return
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
        # Known once this commits: the expiries recorded above are no longer pending.
        self._next_expiry = (facts, next_expiry())


def idempotency_record(
    key_name: str,
    idem: IdempotencyRequest,
    at: datetime,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
) -> dict[str, Any]:
    """The columns of the record that replays an answer to retries of its request."""
    return {
        "key_name": key_name,
        "idempotency_key": idem.key,
        "method": idem.method,
        "path": idem.path,
        "request_hash": idem.fingerprint,
        "status_code": status,
        "response": body,
        "headers": headers,
        "created_at": at,
    }


def find_record(key_name: str, idem: IdempotencyRequest) -> IdempotencyRecord | None:
    """The record stored under this API key's Idempotency-Key, if any."""
    return db.session.execute(
        sa.select(IdempotencyRecord).where(
            IdempotencyRecord.key_name == key_name,
            IdempotencyRecord.idempotency_key == idem.key,
        )
    ).scalar_one_or_none()


def replay_of(
    record: IdempotencyRecord | None, idem: IdempotencyRequest, now: datetime
) -> Replay | None:
    """The first answer to replay for a retry; None when there is none (or it is past the
    TTL, when the key is free again); a 422 when the key came with a different request."""
    if record is None or idempotency.expired(record.created_at, now):
        return None
    if record.request_hash != idem.fingerprint:
        raise key_reused()
    return Replay(record.status_code, dict(record.response), dict(record.headers))


def key_reused() -> ValidationFailed:
    """The 422 for an Idempotency-Key sent again with a different request."""
    return ValidationFailed(
        "This Idempotency-Key was already used with a different request; "
        "use a new key for a new request.",
        errors={"Idempotency-Key": ["Reused with a different request."]},
    )


def find_replay(key_name: str, idem: IdempotencyRequest, now: datetime) -> Replay | None:
    """Under the head lock: the replay for a retry, or None after removing a record past the
    TTL (whether or not the sweeper has pruned it yet) so this write's answer takes its place."""
    record = find_record(key_name, idem)
    replay = replay_of(record, idem, now)
    if replay is None and record is not None:
        db.session.execute(sa.delete(IdempotencyRecord).where(IdempotencyRecord.id == record.id))
    return replay


HEAD = table(LedgerHead)
APPEND_EVENT = PlainStatement.insert(table(Event), EVENT_COLUMNS)
LOCK_HEAD = PlainStatement(
    f"UPDATE ledger_head SET seq = seq WHERE id = {HEAD_ID} RETURNING seq, at",
    results=(HEAD.c.seq, HEAD.c.at),
)
MOVE_HEAD = PlainStatement(
    f"UPDATE ledger_head SET seq = :seq, at = :at WHERE id = {HEAD_ID}",
    binds={"at": HEAD.c.at},
)


class LockedHead(NamedTuple):
    """The ledger head as a write transaction locked it, and the driver connection it holds."""

    seq: int
    at: datetime | None
    driver: Driver


def lock_head() -> LockedHead:
    """Start a write transaction by locking the ledger head; return its seq and time.

    Until commit or rollback no other writer can hand out a seq, on either backend.
    """
    session = db.session
    if session().in_transaction():
        # Whatever this request read so far was a different snapshot; writes start afresh.
        session.rollback()
    driver = Driver(session.connection(execution_options={WRITE_OPTION: True}))
    seq, at = driver.rows(LOCK_HEAD, driver.execute(LOCK_HEAD))[0]
    return LockedHead(int(seq), at, driver)
