"""What users do for themselves (/v1/me, and the /me page): read their own record, set their own
choices (source self_service) and have Global Privacy Control honoured; as the user, never as
the product.

Decisions come from the same document the app API answers with (subjects.subject_document),
so whatever a decision carries (legal basis, restriction, notice version) reaches the user too;
this module adds only what a person needs beside it: the purpose's title, description and
notice, and the reason in plain words (service.domain.explanations).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from service.domain import consent_record, validation
from service.domain.clock import isoformat, utcnow
from service.domain.errors import Conflict, NotFound, PreconditionFailed
from service.domain.explanations import GPC_SOURCE, explain
from service.ledger import choices, purposes, signing
from service.ledger.subjects import subject_document
from service.ledger.transaction import Actor, IdempotencyRequest
from service.reads import history
from service.reads import runs as run_reads
from service.reads.consistent import head_seq, read_transaction
from service.reads.state import load_user
from service.runtime.extensions import db
from service.runtime.models import Choice, Purpose, Restriction, Subject

USER_ROLE = "user"
SOURCE = "self_service"
# If-Match for "no choice yet": a choice's version starts at 1, so only its absence is 0.
NO_CHOICE_YET = '"0"'
# Who issues the consent records it signs (its keys at /.well-known/jwks.json).
RECORD_ISSUER = "Consent Ledger"


def user_actor(user_id: str, request_id: str | None = None) -> Actor:
    """The actor a user's own requests are recorded as: `user:<user_id>`, role `user`."""
    return Actor(f"user:{user_id}", USER_ROLE, request_id)


def honour_gpc(actor: Actor, user_id: str, *, skip: str | None = None) -> list[str]:
    """Record `denied` (source gpc) for every purpose that honours GPC and for which the user
    has no choice of their own yet; return those purposes (none the second time).

    Each is recorded as the app path records a choice, with its event in the same transaction,
    and only if the record is still at version 0 then (If-Match), so a choice the user makes
    at the same moment is never overwritten. An erased user is left as they are. `skip` is the
    purpose the request itself sets.
    """
    user_id = validation.user_id(user_id)
    with read_transaction(consistent=False):
        if db.session.execute(
            sa.select(Subject.erased).where(Subject.user_id == user_id)
        ).scalar_one_or_none():
            return []
        chosen = sa.select(Choice.purpose).where(Choice.user_id == user_id)
        due = list(
            db.session.execute(
                sa.select(Purpose.key)
                .where(Purpose.honours_gpc.is_(True), Purpose.key.not_in(chosen))
                .order_by(Purpose.key)
            ).scalars()
        )
    recorded = []
    for purpose in due:
        if purpose == skip:
            continue
        try:
            choices.set_choice(
                actor, user_id, purpose, "denied", GPC_SOURCE, if_match=NO_CHOICE_YET
            )
        except (PreconditionFailed, Conflict):
            continue  # the user chose, or was erased, in the meantime
        recorded.append(purpose)
    return recorded


def restriction_authorities(ids: Iterable[Any]) -> dict[int, str]:
    """The authority of each restriction named (by id), whose order a decision rests on."""
    wanted = {i for i in ids if isinstance(i, int)}
    if not wanted:
        return {}
    rows = db.session.execute(
        sa.select(Restriction.id, Restriction.authority).where(Restriction.id.in_(wanted))
    )
    return {r.id: r.authority for r in rows}


def consent_document(
    decision: dict[str, Any], purpose: dict[str, Any] | None, authority: str | None = None
) -> dict[str, Any]:
    """A decision as the user is shown it: with the purpose's title, description and current
    notice, its legal basis, and the reason in plain words."""
    purpose = purpose or {}
    return {
        **decision,
        "title": purpose.get("title", decision["purpose"]),
        "description": purpose.get("description", ""),
        "notice": purpose.get("notice"),
        "honours_gpc": bool(purpose.get("honours_gpc", False)),
        "legal_basis": decision.get("legal_basis"),
        "explanation": explain(decision, authority=authority).document(),
    }


def me_document(user_id: str) -> dict[str, Any]:
    """The user's own record as of the head: {user_id, jurisdiction, erased, as_of, consents:
    [decision + {title, description, notice, legal_basis, explanation}]}. A user the ledger has
    never seen gets the answers a pipeline would get for them (basis unknown)."""
    user_id = validation.user_id(user_id)
    described = {p["key"]: p for p in purposes.list_all()}
    with read_transaction():
        seq, at = head_seq()
        view = load_user(user_id)
        document = subject_document(view, seq, at)
        authorities = restriction_authorities(d.get("restriction_id") for d in document["consents"])
    document["consents"] = [
        consent_document(d, described.get(d["purpose"]), authorities.get(d.get("restriction_id")))
        for d in document["consents"]
    ]
    return document


def own_consent(user_id: str, purpose: str) -> dict[str, Any]:
    """The user's own decision for one purpose, as me_document shows it; 404 for no purpose."""
    purpose = validation.purpose_key(purpose)
    for consent in me_document(user_id)["consents"]:
        if consent["purpose"] == purpose:
            return dict(consent)
    raise NotFound(f"Purpose {purpose!r} does not exist.")


def set_own_choice(
    actor: Actor,
    user_id: str,
    purpose: str,
    state: str,
    *,
    notice_version: str | None = None,
    if_match: str | None = None,
    idempotency: IdempotencyRequest | None = None,
) -> dict[str, Any]:
    """Set the user's own choice (source self_service) through the app API's very path:
    If-Match (412 on a stale version), Idempotency-Key (a retry answers the first answer and
    writes nothing), registering a never-seen user, 409 for an erased one."""
    return choices.set_choice(
        actor,
        user_id,
        purpose,
        state,
        SOURCE,
        notice_version=notice_version,
        if_match=if_match,
        idempotency=idempotency,
    )


def own_events(user_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    """A page of the user's own history, oldest first; empty for a user never seen."""
    user_id = validation.user_id(user_id)
    try:
        return history.user_events(user_id, after, limit)
    except NotFound:
        with read_transaction(consistent=False):
            seq, _ = head_seq()
        return {
            "user_id": user_id,
            "as_of": seq,
            "events": [],
            "next_after": after,
            "has_more": False,
        }


def own_runs(user_id: str, as_of: str | None = None) -> dict[str, Any]:
    """The training runs that used the user's data, newest first, each saying whether the user
    is affected now (denied as of the seq)."""
    return run_reads.user_runs(user_id, as_of)


def all_own_events(user_id: str) -> list[dict[str, Any]]:
    """The user's whole history, oldest first (every page of own_events)."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = own_events(user_id, after)
        events.extend(page["events"])
        if not page["has_more"]:
            return events
        after = page["next_after"]


def own_record(user_id: str) -> dict[str, Any]:
    """The user's consent record (JSON-LD, DPV terms, ISO/IEC TS 27560) as of the head, with
    their whole history, signed by the ledger (its `proof`; `consent verify` checks it)."""
    signing.signer()  # made first on first use, so the record is as of the key's own event too
    me = me_document(user_id)
    record = consent_record.build(
        me,
        all_own_events(user_id),
        issued=str(isoformat(utcnow())),
        issuer=RECORD_ISSUER,
    )
    return signing.sign_record(record)
