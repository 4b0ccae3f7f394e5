"""What a worker's writers know between transactions: policies, restrictions, the next expiry.

Every write used to read every purpose's policy and every restriction again, and to look
through all overrides for expired ones, while it held the head lock. These facts change
only with events, so each worker keeps them as of a seq and catches them up from the events
after it, under the head lock (every event up to the head is committed then, and nothing
else can commit): a policy or restriction event reloads them; an override placed with an
expiry can only bring the next expiry forward. Behind by more than SCAN_LIMIT events (a
worker idle through an import, say), it reloads them instead of reading the events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa

from service.domain import events as ev
from service.domain.policy import Policy, RestrictionFacts
from service.reads import restrictions as restriction_reads
from service.reads.state import policies
from service.runtime.extensions import db, worker_state
from service.runtime.models import Event, Override, table
from service.runtime.plain_sql import Driver, PlainStatement

SCAN_LIMIT = 2000
# Events after which policies and restrictions are read again.
RELOAD_KINDS: frozenset[str] = frozenset(
    k.value
    for k in (
        ev.Kind.PURPOSE_CREATED,
        ev.Kind.POLICY_CHANGED,
        ev.Kind.PURPOSE_UPDATED,
        ev.Kind.RESTRICTION_PLACED,
        ev.Kind.RESTRICTION_LIFTED,
    )
)


# The events in (after, through] the facts depend on: policy and restriction changes, and
# overrides placed (with their payload, for the expiry).
SCAN = PlainStatement(
    "SELECT seq, kind, user_id, purpose, data FROM events "
    "WHERE seq > :after AND seq <= :through AND kind IN "
    f"({', '.join(repr(k) for k in sorted([*RELOAD_KINDS, ev.Kind.OVERRIDE_PLACED.value]))})",
    results=(None, None, None, None, table(Event).c.data),
)


class ScanRow(NamedTuple):
    """An event the facts depend on."""

    seq: int
    kind: str
    user_id: str | None
    purpose: str | None
    data: ev.JsonData | None


@dataclass(frozen=True, slots=True)
class SharedFacts:
    """Facts every write resolves with, exact as of `seq`.

    `next_expiry`: no override that is neither lifted nor recorded as expired expires before
    it (it may be earlier than the real next one, never later); None: none has an expiry.
    """

    seq: int
    policies: dict[str, Policy]
    restrictions: tuple[RestrictionFacts, ...]
    next_expiry: datetime | None

    def expiry_due(self, at: datetime) -> bool:
        """Whether an override may have expired by `at` without its event yet."""
        return self.next_expiry is not None and self.next_expiry <= at


class WriteCache:
    """One worker's SharedFacts, replaced whole (readers take one reference, no lock)."""

    def __init__(self) -> None:
        self._facts: SharedFacts | None = None
        self._mutex = threading.Lock()
        # Published notice versions never change or go away: once seen, always valid.
        self.notices: set[tuple[str, str]] = set()

    @property
    def facts(self) -> SharedFacts | None:
        """The facts as last caught up (None before the first write of this worker)."""
        return self._facts

    def catch_up(self, head: int, driver: Driver) -> SharedFacts:
        """Bring the facts to `head`: only under the head lock at `head`, in the caller's
        transaction (on its driver connection). Seqs are gap-free, so how far behind the
        facts are is known before reading anything."""
        facts = self._facts
        # Behind the ledger by much, or ahead of it (a database restored from a backup): reload.
        if facts is None or not 0 <= head - facts.seq <= SCAN_LIMIT:
            return self._keep(load(head))
        if head == facts.seq:
            return facts
        rows = [
            ScanRow(*r)
            for r in driver.rows(SCAN, driver.execute(SCAN, {"after": facts.seq, "through": head}))
        ]
        if any(r.kind in RELOAD_KINDS for r in rows):
            return self._keep(load(head))
        return self._keep(replace(facts, seq=head, next_expiry=_earliest(facts.next_expiry, rows)))

    def _keep(self, facts: SharedFacts) -> SharedFacts:
        with self._mutex:
            self._facts = facts
        return facts

    def expired(self, seen: SharedFacts, next_expiry: datetime | None) -> None:
        """After a commit that recorded every expiry due, with the next one found then.

        Skipped if the facts were replaced since `seen` (another thread's write may have seen
        an override placed later): they stay due, and the next write looks again.
        """
        with self._mutex:
            if self._facts is seen:
                self._facts = replace(seen, next_expiry=next_expiry)


def write_cache() -> WriteCache:
    """This worker's cache."""
    return worker_state("consent_write_cache", WriteCache)


def load(head: int) -> SharedFacts:
    """Read the facts from the tables (in the caller's transaction, which holds the head)."""
    return SharedFacts(
        seq=head,
        policies=policies(),
        restrictions=tuple(restriction_reads.facts()),
        next_expiry=next_expiry(),
    )


def next_expiry() -> datetime | None:
    """The earliest expiry of an override neither lifted nor recorded as expired."""
    value: datetime | None = db.session.execute(
        sa.select(sa.func.min(Override.expires_at)).where(
            Override.lifted_seq.is_(None), Override.expired_seq.is_(None)
        )
    ).scalar_one()
    return value


def _earliest(current: datetime | None, rows: list[ScanRow]) -> datetime | None:
    """The next expiry, brought forward by the overrides placed in these events."""
    earliest = current
    for r in rows:
        if r.kind != ev.Kind.OVERRIDE_PLACED.value:
            continue
        event = ev.from_row(r)
        assert isinstance(event, ev.OverridePlaced)
        if event.expires_at is not None and (earliest is None or event.expires_at < earliest):
            earliest = event.expires_at
    return earliest
