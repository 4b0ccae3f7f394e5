"""The event feeds: events after a seq, oldest first, with a cursor that never skips one."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from service.domain.errors import NotFound, ValidationFailed
from service.domain.events import KEY_KINDS, SIGNING_KEY_KINDS
from service.reads.consistent import head_seq, read_transaction
from service.reads.history import EVENT_COLUMNS, event_document
from service.runtime.extensions import db
from service.runtime.models import Event, Purpose

# Pipelines must not see staff key names, nor the ledger's signing-key rotations (nothing a
# pipeline acts on; verifiers read /.well-known/jwks.json); admins read these in the audit feed.
HIDDEN_FROM_PIPELINES = KEY_KINDS | SIGNING_KEY_KINDS


def changes(after: int, purpose: str | None, limit: int) -> dict[str, Any]:
    """A page of the pipelines' change feed: every event but those hidden from pipelines."""
    return feed(after, limit, purpose=purpose, exclude_kinds=HIDDEN_FROM_PIPELINES)


def audit(after: int, limit: int) -> dict[str, Any]:
    """A page of the admins' audit feed: every event of the ledger."""
    return feed(after, limit, purpose=None, exclude_kinds=())


def feed(
    after: int, limit: int, *, purpose: str | None, exclude_kinds: Collection[str]
) -> dict[str, Any]:
    """A page of events with seq > after (for one purpose, or all; none of exclude_kinds).

    Seqs are handed out in commit order, so resuming from next_after never skips an event.
    When the page is the last one, next_after moves up to the head even if no event matched,
    so a filtered consumer does not rescan the same range.
    """
    with read_transaction():
        head, _ = head_seq()
        if after > head:
            raise ValidationFailed(
                f"after={after} is beyond the ledger head ({head}); "
                "a cursor can only come from this ledger.",
                errors={"after": [f"Must be at most {head}."]},
            )
        if purpose is not None and db.session.get(Purpose, purpose) is None:
            raise NotFound(f"Purpose {purpose!r} does not exist.")
        query = sa.select(*EVENT_COLUMNS).where(Event.seq > after)
        if purpose is not None:
            query = query.where(Event.purpose == purpose)
        if exclude_kinds:
            query = query.where(Event.kind.not_in(sorted(exclude_kinds)))
        rows = db.session.execute(query.order_by(Event.seq).limit(limit + 1)).all()
    has_more = len(rows) > limit
    events = [event_document(r) for r in rows[:limit]]
    next_after = events[-1]["seq"] if has_more else max(after, head)
    return {"events": events, "next_after": next_after, "has_more": has_more, "head": head}
