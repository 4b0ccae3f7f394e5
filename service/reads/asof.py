"""Point-in-time reads: resolving `as_of`, and rebuilding state as of any seq for many users.

The state tables say how things are now; every row also says the seq it last changed at. When
that seq is at or before the requested one, the row is the answer; otherwise the immutable
events up to that seq are. Because seqs are handed out in commit order, both are exact without
holding one long transaction, so a stream of millions of IDs can be answered chunk by chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from service.domain import events as ev
from service.domain import validation
from service.domain.clock import EPOCH, RFC3339_RE, utcnow
from service.domain.errors import NotFound, ValidationFailed
from service.domain.policy import OverrideFacts, Policy, Resolution, SubjectFacts, resolve
from service.ledger.transaction import lock_head
from service.reads import restrictions
from service.reads.consistent import head_seq, read_transaction
from service.runtime.extensions import db
from service.runtime.models import Choice, Event, Override, Purpose, Subject

IN_CHUNK = 5000  # bound on bind parameters per statement (SQLite allows 32766)
SEQ_RE = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class PointInTime:
    """A seq of the ledger and the time of the event it numbers (the epoch for seq 0)."""

    seq: int
    at: datetime


def _as_of_error(raw: str, why: str) -> ValidationFailed:
    return ValidationFailed(f"as_of {raw[:60]!r}: {why}", errors={"as_of": [why]})


def point_in_time(raw: str | None) -> PointInTime:
    """Resolve an `as_of` parameter (a seq or an RFC 3339 time; None = head) to a PointInTime.

    A seq beyond the head, or a time not yet in the past, is a 422: answering it now could
    differ from answering it later.
    """
    with read_transaction(consistent=False):
        head, head_at = head_seq()
    if raw is None or raw == "":
        return PointInTime(head, head_at or EPOCH)
    text = raw.strip()
    if SEQ_RE.fullmatch(text):
        seq = int(text)
        if seq > head:
            raise _as_of_error(raw, f"seq {seq} is beyond the ledger head ({head}).")
        return PointInTime(seq, event_time(seq))
    if not RFC3339_RE.fullmatch(text):
        raise _as_of_error(raw, "must be a seq or an RFC 3339 time with an offset or Z.")
    try:
        when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise _as_of_error(raw, "is not a valid date and time.") from None
    seq = seq_at_time(when)
    return PointInTime(seq, event_time(seq))


def event_time(seq: int) -> datetime:
    """The time of the event numbered seq (the epoch for seq 0)."""
    if seq == 0:
        return EPOCH
    with read_transaction(consistent=False):
        at: datetime = db.session.execute(sa.select(Event.at).where(Event.seq == seq)).scalar_one()
    return at


def seq_at_time(when: datetime) -> int:
    """The last seq whose event happened at or before `when`, fixed for good.

    The head row is locked while reading, so no writer is in flight: every later event gets a
    time after now, and the answer for `when` can no longer change. (A write lock, not a read
    transaction: it is released by rolling back, never committed.)
    """
    try:
        lock_head()
        if when >= utcnow():
            raise ValidationFailed(
                "as_of is not in the past yet; answers as of it could still change.",
                errors={"as_of": ["Must not be in the future."]},
            )
        seq = db.session.execute(sa.select(sa.func.max(Event.seq)).where(Event.at <= when))
        return int(seq.scalar_one() or 0)
    finally:
        db.session.rollback()


def policy_as_of(purpose: str, seq: int) -> Policy:
    """The purpose's default policy (and legal bases) as of seq; 404 if the purpose did not
    exist then."""
    validation.purpose_key(purpose)
    row = db.session.execute(
        sa.select(
            Purpose.defaults,
            Purpose.unknown_subject,
            Purpose.legal_bases,
            Purpose.created_seq,
            Purpose.updated_seq,
        ).where(Purpose.key == purpose)
    ).one_or_none()
    if row is None or row.created_seq > seq:
        raise NotFound(
            f"Purpose {purpose!r} does not exist"
            + ("." if row is None else f" as of seq {seq} (it was created at {row.created_seq}).")
        )
    if row.updated_seq <= seq:
        return Policy.of(row.defaults, row.unknown_subject, row.legal_bases)
    row = db.session.execute(
        sa.select(Event.kind, Event.user_id, Event.purpose, Event.data)
        .where(
            Event.purpose == purpose,
            Event.kind.in_(ev.POLICY_KINDS),
            Event.user_id.is_(None),
            Event.seq <= seq,
        )
        .order_by(Event.seq.desc())
        .limit(1)
    ).one()
    event = ev.from_row(row)
    assert isinstance(event, ev.PolicyEvent)
    return event.policy


def _chunks(items: Sequence[str], size: int = IN_CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _last_events(
    kinds: tuple[ev.Kind, ...], user_ids: Sequence[str], seq: int, purpose: str | None
) -> dict[str, ev.LedgerEvent]:
    """For each user, their last event of these kinds at or before seq."""
    found: dict[str, ev.LedgerEvent] = {}
    for chunk in _chunks(user_ids):
        query = sa.select(Event.user_id, Event.kind, Event.purpose, Event.data).where(
            Event.user_id.in_(chunk), Event.kind.in_(kinds), Event.seq <= seq
        )
        if purpose is not None:
            query = query.where(Event.purpose == purpose)
        for row in db.session.execute(query.order_by(Event.seq)):
            found[row.user_id] = ev.from_row(row)
    return found


@dataclass(frozen=True, slots=True)
class Decided:
    """A resolution, and when its basis is the user's choice, the notice version the user was
    shown when they made it (None if they did not say)."""

    resolution: Resolution
    notice_version: str | None = None


def decide(
    purpose: str,
    pit: PointInTime,
    user_ids: Sequence[str],
    content_times: Sequence[datetime | None] | None = None,
) -> list[Resolution]:
    """Effective consent for each user ID (well-formed, any order) as of pit, in input order,
    each for content of its time in `content_times` (aligned; None: no time).

    Each row read is exact by its seq on its own (see the module's docstring), so this needs
    no consistent snapshot and streams of IDs can be answered chunk by chunk.
    """
    return [d.resolution for d in decided(purpose, pit, user_ids, content_times)]


def decided(
    purpose: str,
    pit: PointInTime,
    user_ids: Sequence[str],
    content_times: Sequence[datetime | None] | None = None,
) -> list[Decided]:
    """decide(), each resolution with the notice version of the choice it rests on."""
    with read_transaction(consistent=False):
        return _decide(purpose, pit, user_ids, content_times)


def _decide(
    purpose: str,
    pit: PointInTime,
    user_ids: Sequence[str],
    content_times: Sequence[datetime | None] | None,
) -> list[Decided]:
    policy = policy_as_of(purpose, pit.seq)
    seq = pit.seq
    orders = restrictions.facts(purpose, seq)
    unique = list(dict.fromkeys(user_ids))
    subjects: dict[str, SubjectFacts] = {}
    stale_jurisdiction: list[str] = []
    for chunk in _chunks(unique):
        for row in db.session.execute(
            sa.select(
                Subject.user_id,
                Subject.jurisdiction,
                Subject.registered_seq,
                Subject.updated_seq,
                Subject.erased_seq,
            ).where(Subject.user_id.in_(chunk), Subject.registered_seq <= seq)
        ):
            erased = row.erased_seq is not None and row.erased_seq <= seq
            subjects[row.user_id] = SubjectFacts(row.jurisdiction, erased)
            if row.updated_seq > seq and not erased:
                stale_jurisdiction.append(row.user_id)
    for user_id, event in _last_events(
        ev.JURISDICTION_KINDS, stale_jurisdiction, seq, None
    ).items():
        assert isinstance(event, ev.SubjectRegistered | ev.JurisdictionChanged)
        subjects[user_id] = SubjectFacts(event.jurisdiction, False)

    known = [u for u, s in subjects.items() if not s.erased]
    choices: dict[str, str | None] = {}
    notices: dict[str, str | None] = {}
    stale_choice: list[str] = []
    overrides: dict[str, list[OverrideFacts]] = {}
    for chunk in _chunks(known):
        for c in db.session.execute(
            sa.select(
                Choice.user_id, Choice.state, Choice.updated_seq, Choice.notice_version
            ).where(Choice.purpose == purpose, Choice.user_id.in_(chunk))
        ):
            if c.updated_seq <= seq:
                choices[c.user_id] = c.state
                notices[c.user_id] = c.notice_version
            else:
                stale_choice.append(c.user_id)
        for o in db.session.execute(
            sa.select(
                Override.id,
                Override.user_id,
                Override.state,
                Override.placed_seq,
                Override.expires_at,
                Override.lifted_seq,
                Override.placed_by,
                Override.ticket,
            ).where(
                Override.purpose == purpose,
                Override.user_id.in_(chunk),
                Override.placed_seq <= seq,
                sa.or_(Override.lifted_seq.is_(None), Override.lifted_seq > seq),
            )
        ):
            overrides.setdefault(o.user_id, []).append(
                OverrideFacts(
                    o.id, o.state, o.placed_seq, o.expires_at, o.lifted_seq, o.placed_by, o.ticket
                )
            )
    for user_id, event in _last_events((ev.Kind.CHOICE_SET,), stale_choice, seq, purpose).items():
        assert isinstance(event, ev.ChoiceSet)
        choices[user_id] = event.state
        notices[user_id] = event.notice_version

    times = content_times if content_times is not None else [None] * len(user_ids)
    out: list[Decided] = []
    for u, t in zip(user_ids, times, strict=True):
        res = resolve(
            subjects.get(u),
            choices.get(u),
            overrides.get(u, ()),
            policy,
            seq,
            pit.at,
            purpose=purpose,
            restrictions=orders,
            content_time=t,
        )
        out.append(Decided(res, notices.get(u) if res.basis == "choice" else None))
    return out
