"""Current state of one user, loaded in one go and resolved per purpose into decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.domain.clock import EPOCH, isoformat
from service.domain.policy import (
    OverrideFacts,
    Policy,
    Resolution,
    RestrictionFacts,
    SubjectFacts,
    resolve,
)
from service.reads import restrictions as restriction_reads
from service.runtime.extensions import db
from service.runtime.models import Choice, Override, Purpose, Subject


@dataclass(frozen=True, slots=True)
class ChoiceFacts:
    """A user's own choice for one purpose."""

    state: str
    source: str
    version: int
    notice_version: str | None = None


@dataclass(frozen=True, slots=True)
class UserView:
    """Everything resolution needs about one user, for every purpose, at the ledger head."""

    user_id: str
    subject: SubjectFacts | None
    choices: dict[str, ChoiceFacts]
    overrides: dict[str, list[OverrideFacts]]
    policies: dict[str, Policy]
    restrictions: tuple[RestrictionFacts, ...] = ()

    def resolve(self, purpose: str, seq: int, at: datetime | None) -> Resolution:
        """Resolve effective consent for one purpose as of seq (which happened at `at`)."""
        choice = self.choices.get(purpose)
        return resolve(
            self.subject,
            choice.state if choice else None,
            self.overrides.get(purpose, ()),
            self.policies[purpose],
            seq,
            at or EPOCH,
            purpose=purpose,
            restrictions=self.restrictions,
        )

    def states(self, seq: int, at: datetime | None) -> dict[str, str]:
        """Effective state for every purpose, as of seq."""
        return {p: self.resolve(p, seq, at).state for p in self.policies}

    def decision(self, purpose: str, seq: int, at: datetime | None) -> dict[str, Any]:
        """The decision for one purpose as a plain JSON-ready dict."""
        res = self.resolve(purpose, seq, at)
        choice = self.choices.get(purpose)
        override = res.override
        return {
            "user_id": self.user_id,
            "purpose": purpose,
            "allowed": res.allowed,
            "state": res.state,
            "basis": res.basis,
            "as_of": seq,
            "legal_basis": res.legal_basis,
            "notice_version": choice.notice_version if choice else None,
            "version": choice.version if choice else 0,
            "choice": choice.state if choice else None,
            "source": choice.source if choice else None,
            "default_selector": res.selector,
            "restriction_id": None if res.restriction is None else res.restriction.id,
            "override": None
            if override is None
            else {
                "id": override.id,
                "state": override.state,
                "placed_by": override.placed_by,
                "ticket": override.ticket,
                "expires_at": isoformat(override.expires_at),
            },
        }


def policies() -> dict[str, Policy]:
    """Every purpose's current policy (with its legal bases), keyed by purpose key."""
    rows = db.session.execute(
        sa.select(
            Purpose.key, Purpose.defaults, Purpose.unknown_subject, Purpose.legal_bases
        ).order_by(Purpose.key)
    )
    return {r.key: Policy.of(r.defaults, r.unknown_subject, r.legal_bases) for r in rows}


def load_user(user_id: str) -> UserView:
    """Load one user's subject, choices and unlifted overrides, and every purpose's policy."""
    session = db.session
    subject_row = session.execute(
        sa.select(Subject.jurisdiction, Subject.erased).where(Subject.user_id == user_id)
    ).one_or_none()
    subject = (
        SubjectFacts(subject_row.jurisdiction, bool(subject_row.erased))
        if subject_row is not None
        else None
    )
    choices: dict[str, ChoiceFacts] = {}
    overrides: dict[str, list[OverrideFacts]] = {}
    if subject is not None:
        for c in session.execute(
            sa.select(
                Choice.purpose, Choice.state, Choice.source, Choice.version, Choice.notice_version
            ).where(Choice.user_id == user_id)
        ):
            choices[c.purpose] = ChoiceFacts(c.state, c.source, c.version, c.notice_version)
        for o in session.execute(
            sa.select(Override).where(Override.user_id == user_id, Override.lifted_seq.is_(None))
        ).scalars():
            overrides.setdefault(o.purpose, []).append(override_facts(o))
    return UserView(
        user_id, subject, choices, overrides, policies(), tuple(restriction_reads.facts())
    )


def override_facts(o: Override) -> OverrideFacts:
    """The resolution-relevant facts of an override row."""
    return OverrideFacts(
        id=o.id,
        state=o.state,
        placed_seq=o.placed_seq,
        expires_at=o.expires_at,
        lifted_seq=o.lifted_seq,
        placed_by=o.placed_by,
        ticket=o.ticket,
    )
