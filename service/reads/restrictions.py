"""Restrictions read back: their facts for resolution as of any seq, and their documents.

A restriction over several purposes is placed (and lifted) by one event per purpose, written
one after the other in the order of its `purposes`: for `purposes[i]` it is in force from seq
`placed_seq + i` until `lifted_seq + i`, exactly where the change feed says so. The table alone
therefore answers as of any seq (rows are committed in seq order), and the read index, which
learns them from the events, agrees.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from service.domain import events as ev
from service.domain.clock import isoformat
from service.domain.errors import NotFound, ValidationFailed
from service.domain.policy import RestrictionFacts, Window
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Event, Purpose, Restriction


def require_purposes(purposes: Iterable[str]) -> None:
    """A 422 naming each purpose of a restriction that does not exist (in the caller's
    transaction): the order is refused whole rather than placed on the others."""
    keys = list(purposes)
    found = set(db.session.execute(sa.select(Purpose.key).where(Purpose.key.in_(keys))).scalars())
    missing = {f"purposes.{i}": ["No such purpose."] for i, k in enumerate(keys) if k not in found}
    if missing:
        names = ", ".join(repr(k) for k in keys if k not in found)
        raise ValidationFailed(f"No such purpose: {names}.", errors=missing)


def window_of(row: Restriction) -> Window | None:
    """The row's window, if it has one."""
    if row.window_from is None or row.window_to is None:
        return None
    return Window(row.window_from, row.window_to, row.time_basis or "processed")


def facts_of(row: Restriction) -> list[RestrictionFacts]:
    """The row as one RestrictionFacts per purpose, each with the seqs of its own events."""
    window = window_of(row)
    return [
        RestrictionFacts(
            id=row.id,
            purposes=frozenset({purpose}),
            jurisdictions=frozenset(row.jurisdictions),
            placed_seq=row.placed_seq + i,
            window=window,
            lifted_seq=None if row.lifted_seq is None else row.lifted_seq + i,
        )
        for i, purpose in enumerate(row.purposes)
    ]


def facts(purpose: str | None = None, seq: int | None = None) -> list[RestrictionFacts]:
    """Every restriction placed by seq (any, without it), per purpose (only `purpose`'s, with
    it), lifted or not: resolution asks each whether it is active as of the seq it answers.
    In the caller's transaction."""
    query = sa.select(Restriction).order_by(Restriction.placed_seq)
    if seq is not None:
        query = query.where(Restriction.placed_seq <= seq)
    found = [f for row in db.session.execute(query).scalars() for f in facts_of(row)]
    if purpose is not None:
        found = [f for f in found if purpose in f.purposes]
    return found


def _changed(row: Restriction) -> dict[str, Any]:
    """How many subjects' answers each of its events changed, per purpose."""
    seqs = [row.placed_seq + i for i in range(len(row.purposes))]
    if row.lifted_seq is not None:
        seqs += [row.lifted_seq + i for i in range(len(row.purposes))]
    found: dict[str, Any] = {"placed": {}, "lifted": None if row.lifted_seq is None else {}}
    rows = db.session.execute(
        sa.select(Event.seq, Event.kind, Event.user_id, Event.purpose, Event.data).where(
            Event.seq.in_(seqs), Event.kind.in_([k.value for k in ev.RESTRICTION_KINDS])
        )
    )
    for r in rows:
        event = ev.from_row(r)
        if isinstance(event, ev.RestrictionEvent) and event.restriction_id == row.id:
            side = "placed" if isinstance(event, ev.RestrictionPlaced) else "lifted"
            found[side][event.purpose] = event.changed
    return found


def restriction_document(row: Restriction, seq: int) -> dict[str, Any]:
    """A restriction as a JSON-ready dict, with its status as of seq and what each of its
    events changed (in the caller's transaction)."""
    window = window_of(row)
    lifted = row.lifted_seq is not None and row.lifted_seq <= seq
    return {
        "id": row.id,
        "authority": row.authority,
        "instrument": row.instrument,
        "purposes": list(row.purposes),
        "jurisdictions": list(row.jurisdictions),
        "window": None
        if window is None
        else {
            "from": isoformat(window.start),
            "to": isoformat(window.end),
            "time_basis": window.time_basis,
        },
        "reason": row.reason,
        "ticket": row.ticket,
        "status": "lifted" if lifted else "active",
        "placed_by": row.placed_by,
        "placed_at": isoformat(row.placed_at),
        "placed_seq": row.placed_seq,
        "lifted_by": row.lifted_by if lifted else None,
        "lifted_at": isoformat(row.lifted_at) if lifted else None,
        "lifted_seq": row.lifted_seq if lifted else None,
        "lift_reason": row.lift_reason if lifted else None,
        "changed": _changed(row) if lifted else {**_changed(row), "lifted": None},
    }


def get(restriction_id: int, seq: int) -> dict[str, Any]:
    """One restriction as of seq; 404 if it does not exist (or was placed after seq)."""
    with read_transaction():
        row = db.session.get(Restriction, restriction_id)
        if row is None or row.placed_seq > seq:
            raise NotFound(
                f"Restriction {restriction_id} does not exist"
                + ("." if row is None else f" as of seq {seq}.")
            )
        return restriction_document(row, seq)


def list_all(
    seq: int, *, purpose: str | None = None, active: bool | None = None
) -> list[dict[str, Any]]:
    """Every restriction placed by seq, newest first, with its status as of seq; only those
    about `purpose`, and only active (or only lifted) ones, when asked."""
    with read_transaction():
        rows: Iterable[Restriction] = db.session.execute(
            sa.select(Restriction)
            .where(Restriction.placed_seq <= seq)
            .order_by(Restriction.placed_seq.desc())
        ).scalars()
        found = []
        for row in rows:
            if purpose is not None and purpose not in row.purposes:
                continue
            document = restriction_document(row, seq)
            if active is not None and (document["status"] == "active") != active:
                continue
            found.append(document)
        return found
