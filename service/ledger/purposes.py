"""Purposes, their default policies and legal bases: create, change (as policy_changed events),
read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from service.domain import validation
from service.domain.clock import isoformat
from service.domain.errors import Conflict, NotFound
from service.domain.events import PolicyChanged, PurposeCreated, PurposeUpdated
from service.ledger.notices import current_notices
from service.ledger.transaction import Actor, LedgerWrite
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Purpose

POLICY_FIELDS = ("defaults", "unknown_subject", "legal_bases")


def purpose_document(p: Purpose, notice: dict[str, Any] | None = None) -> dict[str, Any]:
    """A purpose as a JSON-ready dict, with its current notice (given by the caller)."""
    return {
        "key": p.key,
        "title": p.title,
        "description": p.description,
        "defaults": dict(p.defaults),
        "unknown_subject": p.unknown_subject,
        "legal_bases": dict(p.legal_bases or {}),
        "notice": notice,
        "honours_gpc": p.honours_gpc,
        "version": p.version,
        "created_seq": p.created_seq,
        "updated_seq": p.updated_seq,
        "created_at": isoformat(p.created_at),
        "updated_at": isoformat(p.updated_at),
    }


def create(
    actor: Actor,
    key: str,
    title: str,
    description: str,
    defaults: Mapping[str, str],
    unknown_subject: str = "denied",
    legal_bases: Mapping[str, str] | None = None,
    *,
    honours_gpc: bool = False,
) -> dict[str, Any]:
    """Create a purpose; its creation is the first event of its policy history."""
    key = validation.purpose_key(key, field="key")
    clean = validation.defaults(defaults)
    bases = validation.legal_bases(legal_bases or {})
    with LedgerWrite(actor) as w:
        if db.session.get(Purpose, key) is not None:
            raise Conflict(f"Purpose {key!r} already exists; PATCH it to change it.")
        purpose = Purpose(
            key=key,
            title=title,
            description=description,
            defaults=clean,
            unknown_subject=unknown_subject,
            legal_bases=bases,
            honours_gpc=honours_gpc,
            version=1,
            created_seq=w.head + 1,
            updated_seq=w.head + 1,
            created_at=w.at,
            updated_at=w.at,
        )
        db.session.add(purpose)
        w.append(
            PurposeCreated(
                purpose=key,
                title=title,
                defaults=clean,
                unknown_subject=unknown_subject,
                legal_bases=bases,
                honours_gpc=honours_gpc,
            )
        )
        result = purpose_document(purpose)
    return result


def update(actor: Actor, key: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change a purpose's title, description, default policy or legal bases; no actual change
    writes nothing.

    A change to the policy (defaults, unknown_subject, legal_bases) is a policy_changed event
    holding the changed fields before and after and the whole policy after, so answers as of
    any earlier seq stay reproducible.
    """
    if "defaults" in changes:
        changes = {**changes, "defaults": validation.defaults(changes["defaults"])}
    if "legal_bases" in changes:
        changes = {**changes, "legal_bases": validation.legal_bases(changes["legal_bases"])}
    key = validation.purpose_key(key, field="key")
    with LedgerWrite(actor) as w:
        purpose = db.session.get(Purpose, key)
        if purpose is None:
            raise NotFound(f"Purpose {key!r} does not exist.")
        old = purpose_document(purpose)
        changed = {k: v for k, v in changes.items() if old.get(k) != v}
        if changed:
            for name, value in changed.items():
                setattr(purpose, name, value)
            purpose.version += 1
            purpose.updated_seq = w.head + 1
            purpose.updated_at = w.at
            change = PolicyChanged if any(k in POLICY_FIELDS for k in changed) else PurposeUpdated
            w.append(
                change(
                    purpose=key,
                    before={k: old[k] for k in changed},
                    after=dict(changed),
                    defaults=dict(purpose.defaults),
                    unknown_subject=purpose.unknown_subject,
                    legal_bases=dict(purpose.legal_bases or {}),
                )
            )
        result = purpose_document(purpose, current_notices(key).get(key))
    return result


def get(key: str) -> dict[str, Any]:
    """One purpose, or a 404."""
    key = validation.purpose_key(key, field="key")
    with read_transaction():
        purpose = db.session.get(Purpose, key)
        if purpose is None:
            raise NotFound(f"Purpose {key!r} does not exist.")
        return purpose_document(purpose, current_notices(key).get(key))


def list_all() -> list[dict[str, Any]]:
    """Every purpose, by key."""
    with read_transaction():
        notices = current_notices()
        rows = db.session.execute(sa.select(Purpose).order_by(Purpose.key)).scalars()
        return [purpose_document(p, notices.get(p.key)) for p in rows]
