"""Support overrides: placing one (reason and ticket required), lifting it, listing them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.domain import validation
from service.domain.clock import isoformat, utcnow
from service.domain.errors import Conflict, NotFound, ValidationFailed
from service.domain.events import OverrideLifted, OverridePlaced
from service.domain.policy import override_active
from service.ledger.choices import require_purpose
from service.ledger.subjects import ensure_registered, refuse_if_erased
from service.ledger.transaction import SYSTEM_ACTOR, Actor, IdempotencyRequest, LedgerWrite
from service.reads.consistent import head_seq, read_transaction
from service.reads.state import load_user
from service.runtime.extensions import db
from service.runtime.models import Override, Subject


def override_document(o: Override, seq: int, at: datetime | None) -> dict[str, Any]:
    """An override as a JSON-ready dict, with its status as of seq."""
    if o.lifted_seq is not None and o.lifted_seq <= seq:
        status = "lifted"
    elif at is not None and o.expires_at is not None and o.expires_at <= at:
        status = "expired"
    else:
        status = "active"
    return {
        "id": o.id,
        "user_id": o.user_id,
        "purpose": o.purpose,
        "state": o.state,
        "reason": o.reason,
        "ticket": o.ticket,
        "placed_by": o.placed_by,
        "placed_at": isoformat(o.placed_at),
        "placed_seq": o.placed_seq,
        "expires_at": isoformat(o.expires_at),
        "status": status,
        "lifted_at": isoformat(o.lifted_at),
        "lifted_seq": o.lifted_seq,
        "lifted_by": o.lifted_by,
        "lift_reason": o.lift_reason,
    }


def place(
    actor: Actor,
    user_id: str,
    purpose: str,
    state: str,
    reason: str,
    ticket: str,
    expires_at: datetime | None = None,
    *,
    idempotency: IdempotencyRequest | None = None,
) -> dict[str, Any]:
    """Place an override that beats the user's choice until lifted or expired.

    A user the ledger has not seen yet is registered first. One active override per user and
    purpose: a second is a 409, so that support lifts the first one knowingly.
    """
    user_id = validation.user_id(user_id)
    with LedgerWrite(actor, idempotency) as w:
        if w.replay is not None:
            return w.replay.body
        if expires_at is not None and expires_at <= w.at:
            raise ValidationFailed(
                "expires_at must be in the future.",
                errors={"expires_at": ["Must be later than now."]},
            )
        require_purpose(purpose)
        subject = ensure_registered(w, user_id)
        refuse_if_erased(subject)
        before_view = load_user(user_id)
        active = [
            o for o in before_view.overrides.get(purpose, []) if override_active(o, w.head, w.at)
        ]
        if active:
            raise Conflict(
                f"Override {active[0].id} is already active for {user_id!r} and {purpose!r}; "
                "lift it before placing another.",
            )
        override = Override(
            user_id=user_id,
            purpose=purpose,
            state=state,
            reason=reason,
            ticket=ticket,
            placed_by=actor.name,
            placed_seq=w.head + 1,
            placed_at=w.at,
            expires_at=expires_at,
        )
        db.session.add(override)
        db.session.flush()
        after = load_user(user_id).resolve(purpose, w.head + 1, w.at).state
        w.append(
            OverridePlaced(
                user_id=user_id,
                purpose=purpose,
                override_id=override.id,
                state=state,
                expires_at=expires_at,
            ),
            before=before_view.resolve(purpose, w.head, w.at).state,
            after=after,
            reason=reason,
            ticket=ticket,
        )
        result = override_document(override, w.head, w.at)
        w.remember(201, result, {})
    return result


def lift(actor: Actor, user_id: str, override_id: int, reason: str) -> dict[str, Any]:
    """Lift an active override with a reason; the row stays, marked lifted."""
    user_id = validation.user_id(user_id)
    with LedgerWrite(actor) as w:
        override = db.session.get(Override, override_id)
        if override is None or override.user_id != user_id:
            raise NotFound(f"Override {override_id} does not exist for user {user_id!r}.")
        if override.lifted_seq is not None:
            raise Conflict(
                f"Override {override_id} was already lifted at seq {override.lifted_seq}."
            )
        if override.expired_seq is not None:
            raise Conflict(f"Override {override_id} already expired at seq {override.expired_seq}.")
        subject = db.session.get(Subject, user_id)
        assert subject is not None
        refuse_if_erased(subject)
        before = load_user(user_id).resolve(override.purpose, w.head, w.at).state
        override.lifted_seq = w.head + 1
        override.lifted_at = w.at
        override.lifted_by = actor.name
        override.lift_reason = reason
        db.session.flush()
        w.append(
            OverrideLifted(user_id=user_id, purpose=override.purpose, override_id=override.id),
            before=before,
            after=load_user(user_id).resolve(override.purpose, w.head + 1, w.at).state,
            reason=reason,
            ticket=override.ticket,
        )
        result = override_document(override, w.head, w.at)
    return result


def list_for(user_id: str) -> list[dict[str, Any]]:
    """Every override ever placed for a user, newest first, with its status."""
    user_id = validation.user_id(user_id)
    with read_transaction():
        seq, at = head_seq()
        if db.session.get(Subject, user_id) is None:
            raise NotFound(f"User {user_id!r} is not known to the ledger.")
        rows = db.session.execute(
            sa.select(Override)
            .where(Override.user_id == user_id)
            .order_by(Override.placed_seq.desc())
        ).scalars()
        return [override_document(o, seq, at) for o in rows]


def expire_due(now: datetime | None = None) -> int:
    """Write override_expired events for overrides past their expiry; return how many.

    Any write does this first anyway; calling it on a timer makes expiry show up in the change
    feed and in head answers promptly even when nothing else is written.
    """
    now = now or utcnow()
    with read_transaction():
        due = db.session.execute(
            sa.select(sa.func.count())
            .select_from(Override)
            .where(
                Override.lifted_seq.is_(None),
                Override.expired_seq.is_(None),
                Override.expires_at <= now,
            )
        ).scalar_one()
    if not due:
        return 0
    with LedgerWrite(Actor(*SYSTEM_ACTOR)) as w:
        count = len(w.events)
    return count
