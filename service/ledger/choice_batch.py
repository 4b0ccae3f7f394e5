"""Choice writes committed together: one head lock, one transaction and one commit for a batch.

Under the lock, the users' facts (subject, choices, overrides) are read for the whole batch in
one statement; each write is then planned in the order taken against its user's view, a later
write of the same batch seeing the earlier ones. A write that is refused (404, 409, 412, 422)
is left out and answered alone; the others commit. Their rows go to the database in a few
statements, whatever the size of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.domain.errors import ConsentError, NotFound, PreconditionFailed
from service.domain.events import ChoiceSet, LedgerEvent, SubjectRegistered
from service.ledger.notices import require_notice
from service.ledger.subjects import erased
from service.ledger.transaction import (
    Actor,
    IdempotencyRequest,
    LedgerWrite,
    find_record,
    idempotency_record,
    key_reused,
    replay_of,
)
from service.reads.state import ChoiceFacts, UserFacts, UserView, load_users_facts
from service.runtime.extensions import db
from service.runtime.models import Choice, IdempotencyRecord, Subject, table
from service.runtime.plain_sql import PlainStatement

# A write's outcome: its answer, or the error it is refused with.
Outcome = dict[str, Any] | ConsentError
INSERT_SUBJECT = PlainStatement.insert(
    table(Subject),
    (
        "user_id",
        "jurisdiction",
        "erased",
        "registered_seq",
        "updated_seq",
        "created_at",
        "updated_at",
    ),
)
CHOICE_STATE = ("state", "source", "version", "updated_seq", "updated_at", "notice_version")
# One statement on both backends: a new choice is inserted, an existing one updated.
UPSERT_CHOICE = PlainStatement.insert(
    table(Choice),
    ("user_id", "purpose", *CHOICE_STATE),
    " ON CONFLICT (user_id, purpose) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in CHOICE_STATE),
)


@dataclass(frozen=True, slots=True)
class ChoiceWrite:
    """One request to set a user's choice, and what was read for it before the head lock."""

    actor: Actor
    user_id: str
    purpose: str
    state: str
    source: str
    notice_version: str | None = None
    accepted: frozenset[int] | None = None  # the versions If-Match accepts; None: any
    idempotency: IdempotencyRequest | None = None
    # The purpose and the notice version were found before the lock (once they exist, they
    # never go away).
    checked: bool = False


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    """What one write appends (events with their effective states before and after) and
    leaves behind: the user's view after it, and its answer."""

    events: tuple[tuple[LedgerEvent, str | None, str | None], ...]
    registers: bool
    choice: ChoiceFacts
    seq: int
    view: UserView
    answer: dict[str, Any]


def etag(version: int) -> str:
    """The ETag of a consent record: its version, quoted."""
    return f'"{version}"'


def stale_version(current: int, accepted: frozenset[int]) -> PreconditionFailed:
    """The 412 for an If-Match that names none of the record's current version."""
    return PreconditionFailed(
        f"The consent record is at version {current}; If-Match named "
        f"{', '.join(str(v) for v in sorted(accepted))}. Read it again and retry.",
    )


def plan_choice(write: ChoiceWrite, view: UserView, head: int, at: datetime) -> ChoicePlan:
    """Plan one choice write as the next events after seq `head`, at time `at`.

    A never-seen user is registered first (one subject_registered per purpose); an erased
    user is a 409, a version If-Match does not accept a 412.
    """
    events: list[tuple[LedgerEvent, str | None, str | None]] = []
    registers = view.subject is None
    if registers:
        registered = view.registered()
        old = view.states(head, at)
        new = registered.states(head + 1, at)
        events += [
            (SubjectRegistered(user_id=write.user_id, purpose=p, jurisdiction=None), old.get(p), s)
            for p, s in new.items()
        ]
        view = registered
    if view.subject is not None and view.subject.erased:
        raise erased(write.user_id)
    choice = view.choices.get(write.purpose)
    current = choice.version if choice else 0
    if write.accepted is not None and current not in write.accepted:
        raise stale_version(current, write.accepted)
    seq = head + len(events) + 1
    before = view.resolve(write.purpose, seq - 1, at).state
    made = ChoiceFacts(write.state, write.source, current + 1, write.notice_version)
    after = view.with_choice(write.purpose, made)
    event = ChoiceSet(
        user_id=write.user_id,
        purpose=write.purpose,
        state=write.state,
        previous=choice.state if choice else None,
        source=write.source,
        version=made.version,
        notice_version=write.notice_version,
    )
    events.append((event, before, after.resolve(write.purpose, seq, at).state))
    return ChoicePlan(
        tuple(events), registers, made, seq, after, after.decision(write.purpose, seq, at)
    )


class ChoiceBatch(LedgerWrite):
    """The transaction of a batch: the head lock first, then the writes queued by then."""

    def __init__(self, take: Callable[[], Sequence[ChoiceWrite]]) -> None:
        super().__init__(Actor("system:group-commit", "system"))
        self._take = take
        self.writes: list[ChoiceWrite] = []
        self.users: dict[str, UserFacts] = {}
        self._subjects: list[dict[str, Any]] = []
        self._choices: dict[tuple[str, str], dict[str, Any]] = {}
        self._records: list[dict[str, Any]] = []
        self._replaced: list[int] = []

    def __enter__(self) -> ChoiceBatch:
        self.lock()
        try:
            self.writes = list(self._take())
            # Expiries are recorded as on behalf of the first request, as a write alone would.
            self.actor = self.writes[0].actor if self.writes else self.actor
            self.catch_up()
            self.expire_due_overrides()
            self.users = load_users_facts((w.user_id for w in self.writes), self.driver)
        except BaseException:
            db.session.rollback()
            raise
        return self

    def run(self) -> list[Outcome]:
        """Plan every write in order and stage the rows of those accepted; each write's
        answer or refusal, in the order taken."""
        views: dict[str, UserView] = {}
        answered: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        outcomes: list[Outcome] = []
        for write in self.writes:
            try:
                outcomes.append(self._one(write, views, answered))
            except ConsentError as refused:
                outcomes.append(refused)
        self._write_rows()
        return outcomes

    def _one(
        self,
        write: ChoiceWrite,
        views: dict[str, UserView],
        answered: dict[tuple[str, str], tuple[str, dict[str, Any]]],
    ) -> dict[str, Any]:
        idem = write.idempotency
        record: IdempotencyRecord | None = None
        if idem is not None:
            earlier = answered.get((write.actor.name, idem.key))
            if earlier is not None:
                if earlier[0] != idem.fingerprint:
                    raise key_reused()
                return earlier[1]
            record = find_record(write.actor.name, idem)
            replay = replay_of(record, idem, self.at)
            if replay is not None:
                return replay.body
        view = self._view(write, views)
        plan = plan_choice(write, view, self.head, self.at)
        for event, before, after in plan.events:
            self.append_bulk(event, before=before, after=after, actor=write.actor)
        self._stage(write, plan)
        views[write.user_id] = plan.view
        if idem is not None:
            if record is not None:  # past its TTL: this answer takes its place
                self._replaced.append(record.id)
            self._records.append(
                idempotency_record(
                    write.actor.name,
                    idem,
                    self.at,
                    200,
                    plan.answer,
                    {"ETag": etag(plan.choice.version)},
                )
            )
            answered[(write.actor.name, idem.key)] = (idem.fingerprint, plan.answer)
        return plan.answer

    def _view(self, write: ChoiceWrite, views: dict[str, UserView]) -> UserView:
        """The user's view now: as read under the lock, or as an earlier write of this batch
        left it."""
        facts = self.facts
        assert facts is not None
        if write.purpose not in facts.policies:
            raise NotFound(f"Purpose {write.purpose!r} does not exist.")
        if write.notice_version is not None and not write.checked:
            require_notice(write.purpose, write.notice_version)
        view = views.get(write.user_id)
        if view is None:
            view = self.users[write.user_id].view(facts.policies, facts.restrictions)
        return view

    def _stage(self, write: ChoiceWrite, plan: ChoicePlan) -> None:
        if plan.registers:
            first = plan.seq - len(plan.events) + 1
            self._subjects.append(
                {
                    "user_id": write.user_id,
                    "jurisdiction": None,
                    "erased": False,
                    "registered_seq": first,
                    "updated_seq": first,
                    "created_at": self.at,
                    "updated_at": self.at,
                }
            )
        # One row per user and purpose: the last write of the batch is the state it leaves.
        self._choices[(write.user_id, write.purpose)] = {
            "user_id": write.user_id,
            "purpose": write.purpose,
            "state": plan.choice.state,
            "source": plan.choice.source,
            "version": plan.choice.version,
            "updated_seq": plan.seq,
            "updated_at": self.at,
            "notice_version": plan.choice.notice_version,
        }

    def _write_rows(self) -> None:
        session = db.session
        if self._replaced:
            session.execute(
                sa.delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(self._replaced))
            )
        if self._records:
            session.execute(sa.insert(table(IdempotencyRecord)), self._records)
        self.stage(INSERT_SUBJECT, self._subjects)
        self.stage(UPSERT_CHOICE, list(self._choices.values()))


def commit_choices(take: Callable[[], Sequence[ChoiceWrite]]) -> list[Outcome]:
    """Commit the writes `take` hands over once the head lock is held; their outcomes."""
    with ChoiceBatch(take) as batch:
        outcomes = batch.run()
    return outcomes
