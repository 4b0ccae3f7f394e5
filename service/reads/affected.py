"""Which of a run's members a later answer of the ledger denies, and since which event.

A member is affected as of seq S when their effective state as of S is denied. Their `seq` is
the event after the run's as_of that began the denial still in force at S: the first seq as of
which the ledger answers denied after the last change from granted in (as_of, S]. None when
they were denied all along since as_of (a member the run should not have used, still denied).

A member's state changes only at their own events, whose `before` and `after` record it, and
at the purpose's policy and restriction events, which record no one's state. So: the state as
of S comes from the read index (decisions.codes / number_codes), the last granted -> denied
change among a member's own events from one indexed range scan of the events table, and for
the rare policy event that turned a default (or never-seen IDs) from granted to denied or
withdrew the purpose from a jurisdiction (not_offered), or a restriction placed on the
purpose, the members it could have flipped are asked as of just before and at that event.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from service.domain import events as ev
from service.domain.policy import Policy, default_for, legal_basis_for
from service.readindex import codes as cd
from service.readindex.codes import CodeArray
from service.readindex.directory import numeric_mask
from service.readindex.index import JURISDICTIONS
from service.reads import asof, decisions
from service.reads.consistent import read_transaction
from service.reads.members import IntArray, MemberSet
from service.runtime.extensions import db, worker_state
from service.runtime.models import Event

CHUNK = 1 << 20
NO_SEQ = -1
CHANGES_KEPT = 16


@dataclass(frozen=True)
class Denials:
    """Each user's last change from granted to denied by their own events in a seq range."""

    numbers: IntArray  # sorted numeric user IDs
    number_seqs: IntArray  # the seq for each
    strings: dict[str, int]

    def seqs_of_numbers(self, values: IntArray) -> IntArray:
        """The seq for each numeric ID, NO_SEQ where none."""
        out = np.full(len(values), NO_SEQ, dtype=np.int64)
        if len(self.numbers) and len(values):
            pos = np.minimum(np.searchsorted(self.numbers, values), len(self.numbers) - 1)
            hit = self.numbers[pos] == values
            out[hit] = self.number_seqs[pos[hit]]
        return out

    def seqs_of_strings(self, values: pa.Array) -> IntArray:
        """The seq for each other ID, NO_SEQ where none."""
        get = self.strings.get
        return np.array([get(v, NO_SEQ) for v in values.to_pylist()], dtype=np.int64)


def own_denials(purpose: str, after: int, through: int) -> Denials:
    """Last granted -> denied change per user among their events for purpose in (after, through]."""
    denial = (
        Event.purpose == purpose,
        Event.seq > after,
        Event.seq <= through,
        Event.user_id.is_not(None),
        Event.before == "granted",
        Event.after == "denied",
    )
    with read_transaction(consistent=False):
        rows = db.session.execute(
            sa.select(Event.user_id, sa.func.max(Event.seq))
            .where(*denial, Event.kind != ev.Kind.OVERRIDE_EXPIRED.value)
            .group_by(Event.user_id)
        ).all()
        found: dict[str, int] = {str(r[0]): int(r[1]) for r in rows}
        for user_id, seq in _expiries(denial, after):
            found[user_id] = max(found.get(user_id, 0), seq)
    ids = pa.array(list(found), pa.string())
    seqs = np.fromiter(found.values(), dtype=np.int64, count=len(found))
    numeric = numeric_mask(ids) if len(ids) else np.zeros(0, dtype=np.bool_)
    numbers = pc.cast(ids.filter(pa.array(numeric)), pa.int64()).to_numpy()
    order = np.argsort(numbers, kind="stable")
    others = ~numeric
    texts = ids.filter(pa.array(others)).to_pylist()
    strings = dict(zip(texts, seqs[others].tolist(), strict=True))
    return Denials(numbers[order], seqs[numeric][order], strings)


def _expiries(denial: tuple[sa.ColumnElement[bool], ...], after: int) -> list[tuple[str, int]]:
    """Overrides whose expiry denied a user, each with the first seq answering denied.

    Expiry is judged at the time of the event an answer is as of, and every override due at
    a write expires in it, before its own events: the first event at or after the expiry
    (another user's expiry, written in the same transaction, may come first) is where answers
    change, not necessarily the override_expired event itself.
    """
    rows = db.session.execute(
        sa.select(Event.user_id, Event.kind, Event.purpose, Event.data).where(
            *denial, Event.kind == ev.Kind.OVERRIDE_EXPIRED.value
        )
    ).all()
    found = []
    for row in rows:
        expiry = ev.from_row(row)
        assert isinstance(expiry, ev.OverrideExpired)
        first = db.session.execute(
            sa.select(sa.func.min(Event.seq)).where(Event.at >= expiry.expires_at)
        ).scalar_one()
        if first is not None and first > after:
            found.append((expiry.user_id, int(first)))
    return found


def denying_policy_events(purpose: str, after: int, through: int) -> list[int]:
    """Seqs of the purpose's events in (after, through] that no one's own event records but
    that may have turned answers from granted to denied: policy events that turned some
    default, or the answer for never-seen IDs, from granted to denied, and every restriction
    placed on the purpose; newest first."""
    with read_transaction(consistent=False):
        policy = asof.policy_as_of(purpose, after)
        rows = db.session.execute(
            sa.select(Event.seq, Event.kind, Event.user_id, Event.purpose, Event.data)
            .where(
                Event.purpose == purpose,
                Event.kind.in_(ev.POLICY_KINDS),
                Event.user_id.is_(None),
                Event.seq > after,
                Event.seq <= through,
            )
            .order_by(Event.seq)
        ).all()
        placed = db.session.execute(
            sa.select(Event.seq).where(
                Event.purpose == purpose,
                Event.kind == ev.Kind.RESTRICTION_PLACED.value,
                Event.seq > after,
                Event.seq <= through,
            )
        ).scalars()
        found = [int(seq) for seq in placed]
    for row in rows:
        event = ev.from_row(row)
        assert isinstance(event, ev.PolicyEvent)
        if _denies_more(policy, event.policy):
            found.append(int(row.seq))
        policy = event.policy
    return sorted(found, reverse=True)


def _denies_more(old: Policy, new: Policy) -> bool:
    if old.unknown_subject == "granted" and new.unknown_subject == "denied":
        return True
    return any(
        (default_for(old, j)[0] == "granted" and default_for(new, j)[0] == "denied")
        # Withdrawing the purpose from a jurisdiction denies choices and overrides there too.
        or (legal_basis_for(new, j) == "not_offered" and legal_basis_for(old, j) != "not_offered")
        for j in JURISDICTIONS
    )


@dataclass(frozen=True)
class Affected:
    """The affected members of one slice of a run: their IDs, codes as of S and seqs.

    Numeric members become text only when their IDs are read: counting them needs none."""

    members: IntArray | pa.Array  # numbers, or the other IDs as text
    codes: CodeArray
    seqs: IntArray  # NO_SEQ: denied all along since the run's as_of

    @property
    def ids(self) -> pa.Array:
        """The members as an Arrow string array."""
        if isinstance(self.members, np.ndarray):
            return pc.cast(pa.array(self.members, pa.int64()), pa.string())
        return self.members


class Changes:
    """The denials and denying policy events of a purpose between two seqs, as last computed
    (runs of one purpose and as_of, listed at one head, share them); both never change."""

    def __init__(self) -> None:
        self.kept: OrderedDict[tuple[str, int, int], tuple[Denials, list[int]]] = OrderedDict()
        self.lock = threading.Lock()

    def between(self, purpose: str, after: int, through: int) -> tuple[Denials, list[int]]:
        """Denials and denying policy events of purpose in (after, through]."""
        key = (purpose, after, through)
        with self.lock:
            found = self.kept.get(key)
        if found is None:
            found = (
                own_denials(purpose, after, through),
                denying_policy_events(purpose, after, through),
            )
            with self.lock:
                self.kept[key] = found
                while len(self.kept) > CHANGES_KEPT:
                    self.kept.popitem(last=False)
        return found


def _changes() -> Changes:
    return worker_state("consent_run_changes", Changes)


def affected(purpose: str, as_of: int, seq: int, members: MemberSet) -> Iterator[Affected]:
    """The run's affected members as of seq, slice by slice: numbers in numeric order, then
    the other IDs in byte order."""
    denials, flips = _changes().between(purpose, as_of, seq)
    for start in range(0, len(members.numbers), CHUNK):
        values = members.numbers[start : start + CHUNK]
        codes = decisions.number_codes(purpose, seq, values)
        denied = np.flatnonzero(~cd.allowed(codes))
        numbers = values[denied]
        seqs = denials.seqs_of_numbers(numbers)
        for flip in flips:
            _apply_flip(flip, seqs, _numbers_at(purpose, numbers))
        yield Affected(numbers, codes[denied], seqs)
    for start in range(0, len(members.strings), CHUNK):
        texts = members.strings.slice(start, CHUNK)
        codes = decisions.codes(purpose, seq, texts)
        denied = np.flatnonzero(~cd.allowed(codes))
        others = texts.take(pa.array(denied, pa.int64()))
        seqs = denials.seqs_of_strings(others)
        for flip in flips:
            _apply_flip(flip, seqs, _texts_at(purpose, others))
        yield Affected(others, codes[denied], seqs)


CodesAt = Callable[[int, npt.NDArray[np.intp]], CodeArray]


def _numbers_at(purpose: str, numbers: IntArray) -> CodesAt:
    return lambda at, where: decisions.number_codes(purpose, at, numbers[where])


def _texts_at(purpose: str, texts: pa.Array) -> CodesAt:
    return lambda at, where: decisions.codes(purpose, at, texts.take(pa.array(where)))


def _apply_flip(flip: int, seqs: IntArray, codes_at: CodesAt) -> None:
    """Give seq `flip` to the denied members that policy event turned from granted to denied,
    unless a later change of their own began their denial. `codes_at(seq, positions)` answers
    for the members at those positions."""
    candidates = np.flatnonzero(seqs < flip)
    if not len(candidates):
        return
    turned = cd.allowed(codes_at(flip - 1, candidates)) & ~cd.allowed(codes_at(flip, candidates))
    seqs[candidates[turned]] = flip
