"""Impact of a default-policy change: how many known subjects would change effective state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from service.domain import validation
from service.domain.clock import utcnow
from service.domain.errors import NotFound
from service.domain.policy import Policy, default_for
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Choice, Override, Purpose, Subject


def default_subjects_by_jurisdiction(purpose: str) -> dict[str | None, int]:
    """Count, per jurisdiction, the known subjects whose state for `purpose` is its default.

    Only they can change when the defaults do: erased subjects are denied whatever the policy,
    and a choice or an active override beats any default.
    """
    now = utcnow()
    has_choice = sa.exists().where(Choice.user_id == Subject.user_id, Choice.purpose == purpose)
    has_override = sa.exists().where(
        Override.user_id == Subject.user_id,
        Override.purpose == purpose,
        Override.lifted_seq.is_(None),
        Override.expired_seq.is_(None),
        sa.or_(Override.expires_at.is_(None), Override.expires_at > now),
    )
    rows = db.session.execute(
        sa.select(Subject.jurisdiction, sa.func.count())
        .where(Subject.erased.is_(False), ~has_choice, ~has_override)
        .group_by(Subject.jurisdiction)
    )
    return {r[0]: int(r[1]) for r in rows}


def default_change(purpose: str, new_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """How many known subjects would change effective state if `purpose` got `new_defaults`.

    One GROUP BY over subjects on their default, each jurisdiction judged under the old and the
    new policy. Never-seen IDs follow unknown_subject and are not counted here.
    """
    key = validation.purpose_key(purpose, field="key")
    clean = validation.defaults(new_defaults)
    with read_transaction():
        row = db.session.get(Purpose, key)
        if row is None:
            raise NotFound(f"Purpose {key!r} does not exist.")
        old = Policy.of(row.defaults, row.unknown_subject)
        counts = default_subjects_by_jurisdiction(key)
    new = Policy(clean, row.unknown_subject)
    to_granted = to_denied = 0
    for jurisdiction, count in counts.items():
        before, _ = default_for(old, jurisdiction)
        after, _ = default_for(new, jurisdiction)
        if before != after:
            if after == "granted":
                to_granted += count
            else:
                to_denied += count
    return {
        "purpose": key,
        "on_default": sum(counts.values()),
        "to_granted": to_granted,
        "to_denied": to_denied,
        "changed": to_granted + to_denied,
    }
