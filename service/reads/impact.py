"""Impact of a policy change: how many known subjects would change effective state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from service.domain import validation
from service.domain.clock import utcnow
from service.domain.errors import NotFound
from service.domain.policy import Policy, default_for, legal_basis_for
from service.readindex.index import JURISDICTIONS
from service.reads import restrictions as restriction_reads
from service.reads.consistent import head_seq, read_transaction
from service.runtime.extensions import db
from service.runtime.models import Choice, Override, Purpose, Subject


def _active_override(purpose: str) -> sa.ColumnElement[bool]:
    now = utcnow()
    return sa.and_(
        Override.user_id == Subject.user_id,
        Override.purpose == purpose,
        Override.lifted_seq.is_(None),
        Override.expired_seq.is_(None),
        sa.or_(Override.expires_at.is_(None), Override.expires_at > now),
    )


def default_subjects_by_jurisdiction(purpose: str) -> dict[str | None, int]:
    """Count, per jurisdiction, the known subjects whose state for `purpose` is its default.

    Only they can change when the defaults do: erased subjects are denied whatever the policy,
    and a choice or an active override beats any default.
    """
    has_choice = sa.exists().where(Choice.user_id == Subject.user_id, Choice.purpose == purpose)
    has_override = sa.exists().where(_active_override(purpose))
    rows = db.session.execute(
        sa.select(Subject.jurisdiction, sa.func.count())
        .where(Subject.erased.is_(False), ~has_choice, ~has_override)
        .group_by(Subject.jurisdiction)
    )
    return {r[0]: int(r[1]) for r in rows}


def own_states_by_jurisdiction(purpose: str) -> dict[tuple[str | None, str], int]:
    """Count, per jurisdiction and state, the known subjects whose own record decides their
    state for `purpose`: an active override's (the last placed), else their choice's.

    Only a change of where the purpose is offered changes their answer (not_offered beats both).
    """
    override_state = (
        sa.select(Override.state)
        .where(_active_override(purpose))
        .order_by(Override.placed_seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    own = (
        sa.select(
            Subject.jurisdiction.label("jurisdiction"),
            sa.func.coalesce(override_state, Choice.state).label("state"),
        )
        .select_from(Subject)
        .outerjoin(Choice, sa.and_(Choice.user_id == Subject.user_id, Choice.purpose == purpose))
        .where(Subject.erased.is_(False))
        .subquery()
    )
    rows = db.session.execute(
        sa.select(own.c.jurisdiction, own.c.state, sa.func.count())
        .where(own.c.state.is_not(None))
        .group_by(own.c.jurisdiction, own.c.state)
    )
    return {(r[0], str(r[1])): int(r[2]) for r in rows}


def _not_offered(policy: Policy, jurisdiction: str | None) -> bool:
    return legal_basis_for(policy, jurisdiction) == "not_offered"


def default_change(
    purpose: str,
    new_defaults: Mapping[str, Any],
    new_legal_bases: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How many known subjects would change effective state if `purpose` got `new_defaults`
    (and `new_legal_bases`, when given).

    One GROUP BY over subjects on their default, each jurisdiction judged under the old and the
    new policy; when the change moves where the purpose is not offered, a second one over the
    subjects with a choice or an active override, which not_offered overrules. Subjects of a
    jurisdiction an active restriction of the purpose covers are denied whatever the policy
    (an answer without a content time is denied by a windowed one too): they are counted in
    `under_restriction`, never as changing. Never-seen IDs follow unknown_subject (or a `*`
    not_offered) and are not counted here.
    """
    key = validation.purpose_key(purpose, field="key")
    clean = validation.defaults(new_defaults)
    bases = None if new_legal_bases is None else validation.legal_bases(new_legal_bases)
    with read_transaction():
        row = db.session.get(Purpose, key)
        if row is None:
            raise NotFound(f"Purpose {key!r} does not exist.")
        old = Policy.of(row.defaults, row.unknown_subject, row.legal_bases)
        new = Policy.of(clean, row.unknown_subject, old.legal_bases if bases is None else bases)
        counts = default_subjects_by_jurisdiction(key)
        offering_moves = any(_not_offered(old, j) != _not_offered(new, j) for j in JURISDICTIONS)
        own = own_states_by_jurisdiction(key) if offering_moves else {}
        head, _ = head_seq()
        restrictions = [r for r in restriction_reads.facts(key, head) if r.active(head)]
    to_granted = to_denied = under_restriction = 0
    judged = [(j, default_for(old, j)[0], default_for(new, j)[0], n) for j, n in counts.items()] + [
        (j, state, state, n) for (j, state), n in own.items()
    ]
    for jurisdiction, old_state, new_state, count in judged:
        if any(r.covers(key, jurisdiction) for r in restrictions):
            under_restriction += count
            continue
        before = "denied" if _not_offered(old, jurisdiction) else old_state
        after = "denied" if _not_offered(new, jurisdiction) else new_state
        if before != after:
            if after == "granted":
                to_granted += count
            else:
                to_denied += count
    return {
        "purpose": key,
        "on_default": sum(counts.values()),
        "with_own_state": sum(own.values()),
        "to_granted": to_granted,
        "to_denied": to_denied,
        "changed": to_granted + to_denied,
        "under_restriction": under_restriction,
    }
