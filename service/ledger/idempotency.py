"""Idempotency records kept for a TTL: whether a stored answer may be replayed, and pruning."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from flask import current_app

from service.domain.clock import utcnow
from service.runtime.database import WRITE_OPTION
from service.runtime.extensions import db
from service.runtime.models import IdempotencyRecord

PRUNE_BATCH = 1000


def ttl() -> timedelta:
    """How long a first answer is replayed (CONSENT_IDEMPOTENCY_TTL_HOURS)."""
    return timedelta(hours=float(current_app.config["CONSENT_IDEMPOTENCY_TTL_HOURS"]))


def expired(created_at: datetime, now: datetime) -> bool:
    """Whether a record stored at created_at is past the TTL at now: never replayed, prunable."""
    return created_at <= now - ttl()


def prune(
    now: datetime | None = None, *, batch_size: int = PRUNE_BATCH, max_batches: int | None = None
) -> int:
    """Delete the records past the TTL, oldest first, batch_size per transaction; return how many.

    Stops when none are left or after max_batches (the sweeper's bound per tick). Records are not
    events, so this takes no ledger lock; each batch holds the write lock only for its own delete,
    and only when a read has found something to delete.
    """
    cutoff = (now or utcnow()) - ttl()
    is_expired = IdempotencyRecord.created_at <= cutoff
    session = db.session
    deleted = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        if session().in_transaction():
            session.rollback()
        ids = list(
            session.execute(
                sa.select(IdempotencyRecord.id)
                .where(is_expired)
                .order_by(IdempotencyRecord.created_at)
                .limit(batch_size)
            ).scalars()
        )
        session.rollback()
        if not ids:
            break
        session.connection(execution_options={WRITE_OPTION: True})
        try:
            # Checked again: a writer may have replaced a stale record meanwhile, and SQLite can
            # hand its id to the new one.
            result = session.execute(
                sa.delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids), is_expired),
                execution_options={"synchronize_session": False},
            )
            session.commit()
        except BaseException:
            session.rollback()
            raise
        deleted += cast(sa.CursorResult[Any], result).rowcount
        if len(ids) < batch_size:
            break
    return deleted
