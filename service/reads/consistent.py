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
def read_transaction(*, consistent: bool = True) -> Iterator[None]:
    """A read-only transaction, ended (rolled back) however the block ends.

    With `consistent`, all its statements see one state of the ledger: on PostgreSQL it is
    REPEATABLE READ, so the head seq read first and the rows read after it agree; on SQLite one
    deferred transaction in WAL mode gives the same guarantee. Without it (one statement, or
    reads that are exact by seq on their own), it is the backend's default transaction.
    Every read on the service goes through here, so none leaves a transaction open.
    """
    session = db.session
    if session().in_transaction():
        session.rollback()
    if consistent:
        options: dict[str, Any] = {}
        if session.get_bind().dialect.name == "postgresql":
            options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        session.connection(execution_options=options)
    try:
        yield
    finally:
        session.rollback()
