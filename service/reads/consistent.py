"""Read transactions: one consistent view of the ledger for every read, and its head."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.runtime.extensions import db
from service.runtime.models import LedgerHead

HEAD_ID = 1


def head_seq() -> tuple[int, datetime | None]:
    """Return the ledger head (last committed seq) and the time of that event."""
    row = db.session.execute(
        sa.select(LedgerHead.seq, LedgerHead.at).where(LedgerHead.id == HEAD_ID)
    ).one()
    return int(row.seq), row.at


@contextmanager
def read_transaction() -> Iterator[None]:
    """A read-only transaction whose statements all see one consistent state of the ledger.

    On PostgreSQL it is REPEATABLE READ, so the head seq read first and the rows read after it
    agree; on SQLite one deferred transaction in WAL mode gives the same guarantee.
    """
    session = db.session
    if session().in_transaction():
        session.rollback()
    options: dict[str, Any] = {}
    if session.get_bind().dialect.name == "postgresql":
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
    session.connection(execution_options=options)
    try:
        yield
    finally:
        session.rollback()
