"""The event log read back: one user's history, and the JSON shape every event is given in."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.domain import events as ev
from service.domain import validation
from service.domain.clock import isoformat
from service.domain.errors import NotFound
from service.reads.consistent import head_seq, read_transaction
from service.runtime.extensions import db
from service.runtime.models import Event, Subject

EVENT_COLUMNS = (
    Event.seq,
    Event.at,
    Event.kind,
    Event.user_id,
    Event.purpose,
    Event.before,
    Event.after,
    Event.actor,
    Event.role,
    Event.reason,
    Event.ticket,
    Event.request_id,
    Event.data,
)


def event_document(row: Any, event: ev.LedgerEvent | None = None) -> dict[str, Any]:
    """An event row as the JSON-ready dict the API answers with; its `data` is the typed
    event's own payload (`event`, when the caller has typed the row already)."""
    event = event or ev.from_row(row)
    return {
        "seq": row.seq,
        "at": isoformat(row.at),
        "kind": event.kind.value,
        "user_id": row.user_id,
        "purpose": row.purpose,
        "before": row.before,
        "after": row.after,
        "actor": row.actor,
        "role": row.role,
        "reason": row.reason,
        "ticket": row.ticket,
        "request_id": row.request_id,
        "data": event.to_data(),
    }


def user_events(user_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    """A page of one user's history, oldest first, with the cursor for the next page."""
    user_id = validation.user_id(user_id)
    with read_transaction():
        seq, _ = head_seq()
        if db.session.get(Subject, user_id) is None:
            raise NotFound(f"User {user_id!r} is not known to the ledger.")
        rows = db.session.execute(
            sa.select(*EVENT_COLUMNS)
            .where(Event.user_id == user_id, Event.seq > after)
            .order_by(Event.seq)
            .limit(limit + 1)
        ).all()
    events = [event_document(r) for r in rows[:limit]]
    return {
        "user_id": user_id,
        "as_of": seq,
        "events": events,
        "next_after": events[-1]["seq"] if events else after,
        "has_more": len(rows) > limit,
    }
