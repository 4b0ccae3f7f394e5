"""What the console shows about one user (their record as of the head, and their timeline),
and about restrictions."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.domain import events as ev
from service.domain import validation
from service.ledger.overrides import override_document
from service.ledger.subjects import subject_document
from service.reads import asof
from service.reads import restrictions as restriction_reads
from service.reads.consistent import head_seq, read_transaction
from service.reads.history import EVENT_COLUMNS, event_document
from service.reads.runs import user_runs
from service.reads.state import load_user
from service.runtime.extensions import db
from service.runtime.models import Event, Override, Restriction
from service.web.console.wording import event_words

PAGE_SIZE = 50


def user_record(user_id: str, page: int = 1, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """A user's subject document, overrides, the training runs that used their data, and one
    page of history (newest first).

    A never-seen ID is answered too (every purpose on unknown_subject), so support can see what
    the ledger would say about it, and place an override that registers it.
    """
    user_id = validation.user_id(user_id)
    page = max(page, 1)
    with read_transaction():
        seq, at = head_seq()
        view = load_user(user_id)
        overrides = db.session.execute(
            sa.select(Override)
            .where(Override.user_id == user_id)
            .order_by(Override.placed_seq.desc())
        ).scalars()
        override_docs = [override_document(o, seq, at) for o in overrides]
        rows = db.session.execute(
            sa.select(*EVENT_COLUMNS)
            .where(Event.user_id == user_id)
            .order_by(Event.seq.desc())
            .offset((page - 1) * page_size)
            .limit(page_size + 1)
        ).all()
        subject = subject_document(view, seq, at)
        # A restriction's decision names it by id; people want to know whose order it is.
        for decision in subject["consents"]:
            row = None
            if decision["restriction_id"] is not None:
                row = db.session.get(Restriction, decision["restriction_id"])
            decision["restriction"] = (
                None if row is None else restriction_reads.restriction_document(row, seq)
            )
    return {
        **subject,
        "runs": user_runs(user_id, str(seq))["runs"],
        "known": view.subject is not None,
        "overrides": override_docs,
        "events": [_timeline_entry(r) for r in rows[:page_size]],
        "page": page,
        "has_more": len(rows) > page_size,
    }


def _timeline_entry(row: Any) -> dict[str, Any]:
    """An event as the API gives it, with what happened in words."""
    event = ev.from_row(row)
    return {**event_document(row, event), "what": event_words(event)}


def restriction_list() -> dict[str, Any]:
    """Every restriction as of the head, the active ones and the lifted ones, newest first."""
    seq = asof.point_in_time(None).seq
    found = restriction_reads.list_all(seq)
    return {
        "as_of": seq,
        "active": [r for r in found if r["status"] == "active"],
        "lifted": [r for r in found if r["status"] == "lifted"],
    }


def restriction_record(restriction_id: int) -> dict[str, Any]:
    """One restriction as of the head, with its events (one per purpose, placed and lifted)
    in words; a 404 if it does not exist."""
    seq = asof.point_in_time(None).seq
    restriction = restriction_reads.get(restriction_id, seq)
    count = len(restriction["purposes"])
    seqs = [restriction["placed_seq"] + i for i in range(count)]
    if restriction["lifted_seq"] is not None:
        seqs += [restriction["lifted_seq"] + i for i in range(count)]
    with read_transaction(consistent=False):
        rows = db.session.execute(
            sa.select(*EVENT_COLUMNS).where(Event.seq.in_(seqs)).order_by(Event.seq.desc())
        ).all()
    return {**restriction, "as_of": seq, "events": [_timeline_entry(r) for r in rows]}
