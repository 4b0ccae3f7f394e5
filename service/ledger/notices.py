"""Purposes' notices (what users are shown): publishing a version, and reading them back.

A published version never changes: publishing the same version again with the same text and
URL changes nothing and answers the notice as first published (so a retried PUT is safe);
with a different text or URL it is a 409. The current notice is the version published last.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.domain import validation
from service.domain.clock import isoformat
from service.domain.errors import Conflict, NotFound, ValidationFailed
from service.domain.events import NoticePublished
from service.ledger.transaction import Actor, LedgerWrite
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Notice, Purpose


def notice_document(n: Notice) -> dict[str, Any]:
    """A notice version as a JSON-ready dict."""
    return {
        "purpose": n.purpose,
        "version": n.version,
        "text": n.text,
        "url": n.url,
        "published_at": isoformat(n.published_at),
        "published_seq": n.published_seq,
        "published_by": n.published_by,
    }


def publish(
    actor: Actor, purpose: str, version: str, text: str, url: str | None = None
) -> dict[str, Any]:
    """Publish a version of a purpose's notice: the row and its notice_published event."""
    purpose = validation.purpose_key(purpose, field="key")
    version = validation.notice_version(version, field="version")
    if validation.NOTICE_TEXT_RE.fullmatch(text) is None:
        raise ValidationFailed(
            "A notice needs text (what users are shown): not blank, no NUL bytes.",
            errors={"text": ["Must not be blank."]},
        )
    if url is not None and validation.NOTICE_URL_RE.fullmatch(url) is None:
        raise ValidationFailed(
            f"{url[:80]!r} is not an http or https URL.",
            errors={"url": ["Must be an http or https URL (ASCII; percent-encode the rest)."]},
        )
    with LedgerWrite(actor) as w:
        if db.session.get(Purpose, purpose) is None:
            raise NotFound(f"Purpose {purpose!r} does not exist.")
        existing = db.session.get(Notice, (purpose, version))
        if existing is not None:
            if existing.text == text and existing.url == url:
                return notice_document(existing)
            raise Conflict(
                f"Notice version {version!r} of {purpose!r} was published at seq "
                f"{existing.published_seq} with another text or URL; a published notice never "
                "changes. Publish a new version."
            )
        notice = Notice(
            purpose=purpose,
            version=version,
            text=text,
            url=url,
            published_seq=w.head + 1,
            published_at=w.at,
            published_by=actor.name,
        )
        db.session.add(notice)
        w.append(NoticePublished(purpose=purpose, version=version, text=text, url=url))
        result = notice_document(notice)
    return result


def require_notice(purpose: str, version: str, field: str = "notice_version") -> None:
    """A 422 naming the field unless that version of the purpose's notice was published (in
    the caller's transaction)."""
    if db.session.get(Notice, (purpose, version)) is None:
        raise ValidationFailed(
            f"Notice version {version!r} of purpose {purpose!r} has not been published; "
            f"publish it with PUT /v1/purposes/{purpose}/notice first.",
            errors={field: [f"No notice version {version!r} for {purpose!r}."]},
        )


def current_notices(purpose: str | None = None) -> dict[str, dict[str, Any]]:
    """The version published last of each purpose's notice (or of one purpose), by purpose."""
    latest = (
        sa.select(Notice.purpose, sa.func.max(Notice.published_seq).label("seq"))
        .group_by(Notice.purpose)
        .subquery()
    )
    query = sa.select(Notice).join(
        latest, sa.and_(Notice.purpose == latest.c.purpose, Notice.published_seq == latest.c.seq)
    )
    if purpose is not None:
        query = query.where(Notice.purpose == purpose)
    return {n.purpose: notice_document(n) for n in db.session.execute(query).scalars()}


def list_for(purpose: str) -> list[dict[str, Any]]:
    """Every published version of a purpose's notice, oldest first; 404 for no such purpose."""
    purpose = validation.purpose_key(purpose, field="key")
    with read_transaction():
        if db.session.get(Purpose, purpose) is None:
            raise NotFound(f"Purpose {purpose!r} does not exist.")
        rows = db.session.execute(
            sa.select(Notice).where(Notice.purpose == purpose).order_by(Notice.published_seq)
        ).scalars()
        return [notice_document(n) for n in rows]


def get(purpose: str, version: str) -> dict[str, Any]:
    """One published version of a purpose's notice, or a 404."""
    purpose = validation.purpose_key(purpose, field="key")
    version = validation.notice_version(version, field="version")
    with read_transaction():
        if db.session.get(Purpose, purpose) is None:
            raise NotFound(f"Purpose {purpose!r} does not exist.")
        notice = db.session.get(Notice, (purpose, version))
        if notice is None:
            raise NotFound(f"Purpose {purpose!r} has no notice version {version!r}.")
        return notice_document(notice)
