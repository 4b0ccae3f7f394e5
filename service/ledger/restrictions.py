"""Restrictions: placing one (an order that beats every choice) and lifting it, each with one
event per purpose that says how many subjects' answers it changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.domain import restrictions as rules
from service.domain.errors import Conflict, NotFound
from service.domain.events import RestrictionLifted, RestrictionPlaced
from service.ledger.transaction import Actor, IdempotencyRequest, LedgerWrite
from service.reads import restriction_impact
from service.reads.restrictions import require_purposes, restriction_document
from service.runtime.extensions import db
from service.runtime.models import Restriction


def _changed(
    w: LedgerWrite, purposes: Sequence[str], jurisdictions: frozenset[str], exclude: int | None
) -> dict[str, int]:
    """Per purpose, the known subjects of the jurisdictions allowed (without a content time)
    as of the head this write holds, as if restriction `exclude` were not in force: whom
    placing it denies, or lifting it allows again. Counted before the write changes anything."""
    index = restriction_impact.writer_index(w.locked_seq)
    # Events this transaction wrote already (override expiries) are not in the index yet.
    pending = {e.user_id for e in w.events if e.user_id is not None}
    return {
        purpose: restriction_impact.allowed_count(
            purpose, jurisdictions, exclude, index=index, seq=w.head, at=w.at, pending=pending
        )
        for purpose in purposes
    }


def place(
    actor: Actor,
    *,
    authority: str,
    instrument: str,
    purposes: Sequence[Any],
    jurisdictions: Sequence[Any],
    window: Mapping[str, Any] | None,
    reason: str,
    ticket: str,
    idempotency: IdempotencyRequest | None = None,
) -> dict[str, Any]:
    """Place a restriction: from its events on, every answer for its purposes about subjects
    of its jurisdictions is denied (a windowed one: for content inside the window, or of no
    given time), whatever their choice or override. Refused whole (422) if any purpose does
    not exist or any part of its scope is invalid; nothing is written then."""
    scope = rules.order(purposes, jurisdictions, window)
    with LedgerWrite(actor, idempotency) as w:
        if w.replay is not None:
            return w.replay.body
        require_purposes(scope.purposes)
        changed = _changed(w, scope.purposes, frozenset(scope.jurisdictions), None)
        bounds = scope.window
        row = Restriction(
            authority=authority,
            instrument=instrument,
            purposes=list(scope.purposes),
            jurisdictions=list(scope.jurisdictions),
            window_from=None if bounds is None else bounds.start,
            window_to=None if bounds is None else bounds.end,
            time_basis=None if bounds is None else bounds.time_basis,
            reason=reason,
            ticket=ticket,
            placed_by=actor.name,
            placed_seq=w.head + 1,
            placed_at=w.at,
        )
        db.session.add(row)
        db.session.flush()
        # One event per purpose, in the order of `purposes`: purposes[i] is restricted from
        # seq placed_seq + i (see service.reads.restrictions).
        for purpose in scope.purposes:
            w.append(
                RestrictionPlaced(
                    purpose=purpose,
                    restriction_id=row.id,
                    authority=authority,
                    instrument=instrument,
                    purposes=scope.purposes,
                    jurisdictions=scope.jurisdictions,
                    window_from=row.window_from,
                    window_to=row.window_to,
                    time_basis=row.time_basis,
                    changed=changed[purpose],
                ),
                reason=reason,
                ticket=ticket,
            )
        result = restriction_document(row, w.head)
        w.remember(201, result, {})
    return result


def lift(actor: Actor, restriction_id: int, reason: str) -> dict[str, Any]:
    """Lift a restriction with a reason; the row stays, marked lifted. 404 if it does not
    exist, 409 if it was lifted already."""
    with LedgerWrite(actor) as w:
        row = db.session.get(Restriction, restriction_id)
        if row is None:
            raise NotFound(f"Restriction {restriction_id} does not exist.")
        if row.lifted_seq is not None:
            raise Conflict(
                f"Restriction {restriction_id} was already lifted at seq {row.lifted_seq}."
            )
        changed = _changed(w, row.purposes, frozenset(row.jurisdictions), row.id)
        row.lifted_seq = w.head + 1
        row.lifted_at = w.at
        row.lifted_by = actor.name
        row.lift_reason = reason
        db.session.flush()
        for purpose in row.purposes:
            w.append(
                RestrictionLifted(purpose=purpose, restriction_id=row.id, changed=changed[purpose]),
                reason=reason,
                ticket=row.ticket,
            )
        result = restriction_document(row, w.head)
    return result
