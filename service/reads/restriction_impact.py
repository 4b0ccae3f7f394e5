"""How many subjects' answers placing or lifting a restriction changes, per purpose.

The count is of known, non-erased subjects of the restriction's jurisdictions whose answer
without a content time is allowed when the restriction is not in force: placing it denies
exactly them, lifting it allows exactly them again (a windowed restriction denies answers
without a time, so it counts the same). Subjects denied anyway (another restriction, erasure,
not_offered, a denied choice, override or default) are not counted.

From the read index when there is one (a vectorised count over its rows), else one GROUP BY
over subjects whose groups the pure rule resolves. A writer counts as of the head it holds:
the index is first caught up to it inside the write's own transaction, and the subjects that
transaction already changed (override expiries written before the restriction's events) are
resolved from the session, which sees them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.domain import restrictions as rules
from service.domain.clock import utcnow
from service.domain.errors import Conflict, NotFound
from service.domain.policy import OverrideFacts, Policy, SubjectFacts, resolve, selects
from service.readindex.follow import follow, index_within, ready_index
from service.readindex.index import ConsentIndex
from service.reads import restrictions as restriction_reads
from service.reads.consistent import head_seq, read_transaction
from service.reads.state import load_user
from service.runtime.extensions import db
from service.runtime.models import Choice, Override, Purpose, Restriction, Subject


def allowed_count(
    purpose: str,
    jurisdictions: frozenset[str],
    exclude: int | None,
    *,
    index: ConsentIndex | None,
    seq: int,
    at: datetime,
    pending: Collection[str] = (),
) -> int:
    """Known subjects of these jurisdictions allowed for purpose as of seq (answered without a
    content time), as if restriction `exclude` were not in force. `index`: one caught up to
    seq, or None for the database; `pending`: users whose rows the index does not have as of
    seq yet (changed earlier in the caller's own transaction), resolved from the session."""
    if index is None:
        return _count_in_database(purpose, jurisdictions, exclude, seq, at)
    total = index.allowed_in(purpose, jurisdictions, exclude, skip=pending)
    for user_id in pending:
        view = load_user(user_id)
        if view.subject is None or not selects(jurisdictions, view.subject.jurisdiction):
            continue
        others = tuple(r for r in view.restrictions if r.id != exclude)
        total += replace(view, restrictions=others).resolve(purpose, seq, at).allowed
    return total


def writer_index(locked_seq: int) -> ConsentIndex | None:
    """The worker's index caught up to the head a writer holds, or None (count in SQL)."""
    return index_within(locked_seq)


def _count_in_database(
    purpose: str, jurisdictions: frozenset[str], exclude: int | None, seq: int, at: datetime
) -> int:
    """One GROUP BY over non-erased subjects by jurisdiction, choice and active override; each
    group resolved by the pure rule with the other restrictions in force. In the caller's
    transaction, so a writer sees its own changes."""
    row = db.session.get(Purpose, purpose)
    if row is None:
        raise NotFound(f"Purpose {purpose!r} does not exist.")
    policy = Policy.of(row.defaults, row.unknown_subject, row.legal_bases)
    others = [r for r in restriction_reads.facts(purpose, seq) if r.id != exclude]
    choice = sa.orm.aliased(Choice)
    override = sa.orm.aliased(Override)
    query = (
        sa.select(Subject.jurisdiction, choice.state, override.state, sa.func.count())
        .select_from(Subject)
        .outerjoin(choice, (choice.user_id == Subject.user_id) & (choice.purpose == purpose))
        .outerjoin(
            override,
            (override.user_id == Subject.user_id)
            & (override.purpose == purpose)
            & override.lifted_seq.is_(None)
            & override.expired_seq.is_(None)
            & (override.expires_at.is_(None) | (override.expires_at > at)),
        )
        .where(Subject.erased.is_(False), Subject.registered_seq <= seq)
        .group_by(Subject.jurisdiction, choice.state, override.state)
    )
    total = 0
    for jurisdiction, chosen, forced, count in db.session.execute(query):
        if not selects(jurisdictions, jurisdiction):
            continue
        overrides = [OverrideFacts(0, forced, 0, None)] if forced is not None else []
        res = resolve(
            SubjectFacts(jurisdiction, False),
            chosen,
            overrides,
            policy,
            seq,
            at,
            purpose=purpose,
            restrictions=others,
        )
        total += int(count) if res.allowed else 0
    return total


def _preview(
    action: str, purposes: Sequence[str], jurisdictions: frozenset[str], exclude: int | None
) -> dict[str, Any]:
    """Counts per purpose now: as of the index's seq once caught up (held still meanwhile),
    or as of the head from the database when there is no index (or it is being rebuilt)."""
    index = ready_index()
    if index is not None and follow(index):
        with index.follow_lock:  # no event is applied while counting: one seq for all
            if all(p in index.purposes for p in purposes):
                seq, at = index.seq, index.at
                counts = {
                    p: allowed_count(p, jurisdictions, exclude, index=index, seq=seq, at=at)
                    for p in purposes
                }
                return _impact(action, seq, counts)
    with read_transaction():
        head, _ = head_seq()
        restriction_reads.require_purposes(purposes)
        counts = {
            p: allowed_count(p, jurisdictions, exclude, index=None, seq=head, at=utcnow())
            for p in purposes
        }
    return _impact(action, head, counts)


def _impact(action: str, seq: int, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "action": action,
        "as_of": seq,
        "purposes": [{"purpose": p, "changed": n} for p, n in counts.items()],
        "changed": sum(counts.values()),
    }


def placing(
    purposes: Sequence[Any], jurisdictions: Sequence[Any], window: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What placing a restriction of this scope would change now, per purpose: how many known
    subjects' answers (without a content time) it would turn from allowed to denied. The
    scope is checked as placing it would (422s alike)."""
    scope = rules.order(purposes, jurisdictions, window)
    return _preview("place", scope.purposes, frozenset(scope.jurisdictions), None)


def lifting(restriction_id: int) -> dict[str, Any]:
    """What lifting a restriction would change now, per purpose: how many known subjects'
    answers (without a content time) would turn from denied back to allowed."""
    with read_transaction():
        row = db.session.get(Restriction, restriction_id)
        if row is None:
            raise NotFound(f"Restriction {restriction_id} does not exist.")
        if row.lifted_seq is not None:
            raise Conflict(
                f"Restriction {restriction_id} was already lifted at seq {row.lifted_seq}."
            )
        purposes, jurisdictions = list(row.purposes), frozenset(row.jurisdictions)
    return {**_preview("lift", purposes, jurisdictions, restriction_id), "id": restriction_id}
