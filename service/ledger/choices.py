"""Users' own choices: setting one (If-Match, Idempotency-Key) and reading effective consent."""

from __future__ import annotations

import re
from typing import Any

from service.domain import validation
from service.domain.errors import BadRequest, NotFound, PreconditionFailed
from service.domain.events import ChoiceSet
from service.ledger.subjects import ensure_registered, known_user, refuse_if_erased
from service.ledger.transaction import Actor, IdempotencyRequest, LedgerWrite
from service.reads.state import load_user
from service.runtime.extensions import db
from service.runtime.models import Choice, Purpose

# An entity tag as this API issues them (a version, quoted), optionally weak.
ETAG_RE = re.compile(r'(?:W/)?"([0-9]{1,18})"')
# An If-Match value (HTTP drops the blanks around it): '*', or a comma-separated list of tags.
IF_MATCH_RE = re.compile(rf"^(?:\*|{ETAG_RE.pattern}(?: *, *{ETAG_RE.pattern})*)$")


def etag(version: int) -> str:
    """The ETag of a consent record: its version, quoted."""
    return f'"{version}"'


def parse_if_match(header: str) -> set[int] | None:
    """Return the versions an If-Match header accepts, or None for '*' (any version)."""
    value = header.strip(" ")
    if IF_MATCH_RE.fullmatch(value) is None:
        raise BadRequest(
            f'If-Match must hold ETags such as "3" as returned by this API, not {header!r}.',
            errors={"If-Match": ["Not a valid ETag list."]},
        )
    if value == "*":
        return None
    return {int(version) for version in ETAG_RE.findall(value)}


def require_purpose(key: str) -> Purpose:
    """Return the purpose, or a 404 naming it (a 422 if the key is malformed)."""
    purpose = db.session.get(Purpose, validation.purpose_key(key))
    if purpose is None:
        raise NotFound(f"Purpose {key!r} does not exist.")
    return purpose


def set_choice(
    actor: Actor,
    user_id: str,
    purpose: str,
    state: str,
    source: str,
    *,
    notice_version: str | None = None,
    if_match: str | None = None,
    idempotency: IdempotencyRequest | None = None,
) -> dict[str, Any]:
    """Record the user's own choice for a purpose, registering an unknown user first.

    With If-Match, a version other than the current one is a 412 and writes nothing. With an
    Idempotency-Key, a retry of the same request returns the first answer and writes nothing.
    """
    user_id = validation.user_id(user_id)
    accepted = parse_if_match(if_match) if if_match is not None else None
    with LedgerWrite(actor, idempotency) as w:
        if w.replay is not None:
            return w.replay.body
        require_purpose(purpose)
        subject = ensure_registered(w, user_id)
        refuse_if_erased(subject)
        choice = db.session.get(Choice, (user_id, purpose))
        current = choice.version if choice else 0
        if if_match is not None and accepted is not None and current not in accepted:
            raise PreconditionFailed(
                f"The consent record is at version {current}; If-Match named "
                f"{', '.join(str(v) for v in sorted(accepted))}. Read it again and retry.",
            )
        before = load_user(user_id).resolve(purpose, w.head, w.at).state
        previous = choice.state if choice else None
        if choice is None:
            choice = Choice(user_id=user_id, purpose=purpose, version=0)
            db.session.add(choice)
        choice.state = state
        choice.source = source
        choice.notice_version = notice_version
        choice.version = current + 1
        choice.updated_seq = w.head + 1
        choice.updated_at = w.at
        db.session.flush()
        view = load_user(user_id)
        w.append(
            ChoiceSet(
                user_id=user_id,
                purpose=purpose,
                state=state,
                previous=previous,
                source=source,
                version=choice.version,
                notice_version=notice_version,
            ),
            before=before,
            after=view.resolve(purpose, w.head + 1, w.at).state,
        )
        result = view.decision(purpose, w.head, w.at)
        w.remember(200, result, {"ETag": etag(choice.version)})
    return result


def get_decisions(user_id: str) -> list[dict[str, Any]]:
    """Effective consent for every purpose, with basis and version, as of the ledger head."""
    view, seq, at = known_user(user_id)
    return [view.decision(p, seq, at) for p in view.policies]


def get_decision(user_id: str, purpose: str) -> dict[str, Any]:
    """Effective consent for one purpose, with basis and version, as of the ledger head."""
    view, seq, at = known_user(user_id)
    if purpose not in view.policies:
        raise NotFound(f"Purpose {purpose!r} does not exist.")
    return view.decision(purpose, seq, at)
