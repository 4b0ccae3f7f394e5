"""Subjects: registering users, changing their jurisdiction, erasing them, and reading them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from service.domain import validation
from service.domain.errors import Conflict, NotFound
from service.domain.events import (
    JurisdictionChanged,
    LedgerEvent,
    SubjectErased,
    SubjectRegistered,
)
from service.ledger.transaction import Actor, LedgerWrite
from service.reads.consistent import head_seq, read_transaction
from service.reads.state import UserView, load_user
from service.runtime.extensions import db
from service.runtime.models import Subject


def emit_per_purpose(
    w: LedgerWrite,
    event: Callable[[str | None], LedgerEvent],
    before: UserView,
    after: UserView,
) -> None:
    """Write one subject-wide change as one event per purpose, each with its effective states.

    `event` makes the event for a purpose. A change-feed consumer reads per purpose; with no
    purposes yet, one event (for no purpose) records the change.
    """
    old = before.states(w.head, w.at)
    new = after.states(w.head + 1, w.at)
    if not new:
        w.append(event(None))
        return
    for purpose, state in new.items():
        w.append(event(purpose), before=old.get(purpose), after=state)


def ensure_registered(w: LedgerWrite, user_id: str, jurisdiction: str | None = None) -> Subject:
    """Return the subject, registering it first (with its events) if the ledger has not seen it."""
    subject = db.session.get(Subject, user_id)
    if subject is not None:
        return subject
    before = load_user(user_id)
    subject = Subject(
        user_id=user_id,
        jurisdiction=jurisdiction,
        erased=False,
        registered_seq=w.head + 1,
        updated_seq=w.head + 1,
        created_at=w.at,
        updated_at=w.at,
    )
    db.session.add(subject)
    db.session.flush()
    emit_per_purpose(
        w,
        lambda purpose: SubjectRegistered(
            user_id=user_id, purpose=purpose, jurisdiction=jurisdiction
        ),
        before,
        load_user(user_id),
    )
    return subject


def refuse_if_erased(subject: Subject) -> None:
    """Erasure is final: nothing about an erased subject may change any more."""
    if subject.erased:
        raise erased(subject.user_id)


def erased(user_id: str) -> Conflict:
    """The 409 for a change to an erased user's record."""
    return Conflict(f"User {user_id!r} is erased; their record can no longer change.")


def put_subject(actor: Actor, user_id: str, jurisdiction: str | None) -> dict[str, Any]:
    """Register a user, or change their jurisdiction; unchanged input writes nothing."""
    user_id = validation.user_id(user_id)
    jurisdiction = validation.jurisdiction(jurisdiction)
    with LedgerWrite(actor) as w:
        existing = db.session.get(Subject, user_id)
        if existing is None:
            ensure_registered(w, user_id, jurisdiction)
        else:
            refuse_if_erased(existing)
            if existing.jurisdiction != jurisdiction:
                before = load_user(user_id)
                previous = existing.jurisdiction
                existing.jurisdiction = jurisdiction
                existing.updated_seq = w.head + 1
                existing.updated_at = w.at
                db.session.flush()
                emit_per_purpose(
                    w,
                    lambda purpose: JurisdictionChanged(
                        user_id=user_id,
                        purpose=purpose,
                        previous=previous,
                        jurisdiction=jurisdiction,
                    ),
                    before,
                    load_user(user_id),
                )
        view = load_user(user_id)
        result = subject_document(view, w.head, w.at)
    return result


def erase(actor: Actor, user_id: str) -> dict[str, Any]:
    """Erase a user: every purpose is denied from now on; the history stays as proof.

    An ID the ledger has never seen is recorded as erased too, so that a permissive
    unknown_subject policy can never allow a deleted account later. Erasing twice writes nothing.
    """
    user_id = validation.user_id(user_id)
    with LedgerWrite(actor) as w:
        subject = ensure_registered(w, user_id)
        if not subject.erased:
            before = load_user(user_id)
            subject.erased = True
            subject.erased_seq = w.head + 1
            subject.updated_seq = w.head + 1
            subject.updated_at = w.at
            db.session.flush()
            emit_per_purpose(
                w,
                lambda purpose: SubjectErased(user_id=user_id, purpose=purpose),
                before,
                load_user(user_id),
            )
        result = subject_document(load_user(user_id), w.head, w.at)
    return result


def known_user(user_id: str) -> tuple[UserView, int, datetime | None]:
    """A known user's view with the head seq and time it is as of; 404 for a never-seen ID."""
    user_id = validation.user_id(user_id)
    with read_transaction():
        seq, at = head_seq()
        view = load_user(user_id)
    if view.subject is None:
        raise NotFound(f"User {user_id!r} is not known to the ledger.")
    return view, seq, at


def get_subject(user_id: str) -> dict[str, Any]:
    """The subject and its effective consent per purpose, as of the ledger head."""
    return subject_document(*known_user(user_id))


def subject_document(view: UserView, seq: int, at: datetime | None) -> dict[str, Any]:
    """A subject with every purpose's decision, as a JSON-ready dict."""
    subject = view.subject
    return {
        "user_id": view.user_id,
        "jurisdiction": subject.jurisdiction if subject else None,
        "erased": subject.erased if subject else False,
        "as_of": seq,
        "consents": [view.decision(p, seq, at) for p in view.policies],
    }
