"""Users' own choices: setting one (If-Match, Idempotency-Key) and reading effective consent."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from flask import current_app

from service.domain import validation
from service.domain.clock import utcnow
from service.domain.errors import BadRequest, ConsentError, NotFound
from service.ledger.choice_batch import (
    ChoiceWrite,
    Outcome,
    commit_choices,
)
from service.ledger.choice_batch import etag as etag  # the ETag of a record, for the views
from service.ledger.group_commit import GroupCommitter
from service.ledger.notices import require_notice
from service.ledger.subjects import known_user
from service.ledger.transaction import Actor, IdempotencyRequest, find_record, replay_of
from service.ledger.write_cache import write_cache
from service.reads.consistent import read_transaction
from service.runtime.extensions import db, worker_state
from service.runtime.models import Purpose

# An entity tag as this API issues them (a version, quoted), optionally weak.
ETAG_RE = re.compile(r'(?:W/)?"([0-9]{1,18})"')
# An If-Match value (HTTP drops the blanks around it): '*', or a comma-separated list of tags.
IF_MATCH_RE = re.compile(rf"^(?:\*|{ETAG_RE.pattern}(?: *, *{ETAG_RE.pattern})*)$")


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
    A notice_version (what the user was shown) must be a published version of the purpose's
    notice: otherwise a 422 naming it, and nothing is written.

    Grouped (CONSENT_WRITE_PATH, the default), what does not need the head lock is checked
    before it, and the write is committed with the worker's other concurrent writes
    (service.ledger.group_commit); serial, it is checked and committed alone under the lock.
    Both give the same answers and events (tests/integration/test_write_paths.py).
    """
    write = ChoiceWrite(
        actor=actor,
        user_id=validation.user_id(user_id),
        purpose=validation.purpose_key(purpose),
        state=state,
        source=source,
        notice_version=(
            None if notice_version is None else validation.notice_version(notice_version)
        ),
        accepted=accepted_versions(if_match),
        idempotency=idempotency,
    )
    if current_app.config["CONSENT_WRITE_PATH"] == "serial":
        outcome = commit_choices(lambda: [write])[0]
    else:
        prepared = prepare(write)
        if isinstance(prepared, dict):
            return prepared
        outcome = committer().submit(prepared)
    if isinstance(outcome, ConsentError):
        raise outcome
    return outcome


def accepted_versions(if_match: str | None) -> frozenset[int] | None:
    """The versions an If-Match header accepts; None without one, or for '*'."""
    if if_match is None:
        return None
    versions = parse_if_match(if_match)
    return None if versions is None else frozenset(versions)


def prepare(write: ChoiceWrite) -> ChoiceWrite | dict[str, Any]:
    """Before the head lock: a retry's first answer (replayed), or the write once its purpose
    and notice version are known to exist (a 404 or 422 if not). Purposes and notices are
    never removed, so this worker's cache of them answers without the database."""
    cache = write_cache()
    facts = cache.facts
    known_purpose = facts is not None and write.purpose in facts.policies
    notice = None if write.notice_version is None else (write.purpose, write.notice_version)
    known_notice = notice is None or notice in cache.notices
    if write.idempotency is None and known_purpose and known_notice:
        return replace(write, checked=True)
    with read_transaction(consistent=False):
        if write.idempotency is not None:
            record = find_record(write.actor.name, write.idempotency)
            replay = replay_of(record, write.idempotency, utcnow())
            if replay is not None:
                return replay.body
        if not known_purpose:
            require_purpose(write.purpose)
        if notice is not None and not known_notice:
            require_notice(*notice)
            cache.notices.add(notice)
    return replace(write, checked=True)


def committer() -> GroupCommitter[ChoiceWrite, Outcome]:
    """This worker's group committer of choice writes."""
    return worker_state("consent_choice_committer", lambda: GroupCommitter(commit_choices))


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
