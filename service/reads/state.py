"""Current state of one user, loaded in one go and resolved per purpose into decisions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
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
from service.runtime.models import Choice, Override, Purpose, Subject, table
from service.runtime.plain_sql import Driver, PlainStatement


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

    def registered(self) -> UserView:
        """This view once a never-seen user is registered (no jurisdiction, not erased)."""
        if self.subject is not None:
            return self
        return replace(self, subject=SubjectFacts(None, False))

    def with_choice(self, purpose: str, choice: ChoiceFacts) -> UserView:
        """This view with the user's choice for one purpose replaced."""
        return replace(self, choices={**self.choices, purpose: choice})

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


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the ledger holds about one user alone: subject, choices, unlifted overrides."""

    user_id: str
    subject: SubjectFacts | None
    choices: dict[str, ChoiceFacts]
    overrides: dict[str, list[OverrideFacts]]

    def view(
        self, policies: dict[str, Policy], restrictions: tuple[RestrictionFacts, ...]
    ) -> UserView:
        """The user's view with the purposes' policies and the restrictions beside it."""
        return UserView(
            self.user_id, self.subject, self.choices, self.overrides, policies, restrictions
        )


def load_user(user_id: str) -> UserView:
    """Load one user's subject, choices and unlifted overrides, and every purpose's policy."""
    return load_user_facts(user_id).view(policies(), tuple(restriction_reads.facts()))


def load_user_facts(user_id: str) -> UserFacts:
    """Load one user's subject, choices and unlifted overrides (in the caller's transaction)."""
    return load_users_facts([user_id])[user_id]


SUBJECTS, CHOICES = table(Subject), table(Choice)
USER_FACTS = PlainStatement(
    {
        dialect: "SELECT s.user_id, s.jurisdiction, s.erased, c.purpose, c.state, c.source, "
        "c.version, c.notice_version, EXISTS (SELECT 1 FROM overrides o "
        "WHERE o.user_id = s.user_id AND o.lifted_seq IS NULL) "
        "FROM subjects s LEFT JOIN choices c ON c.user_id = s.user_id "
        f"WHERE s.user_id {among}"
        for dialect, among in (
            ("postgresql", "= ANY(:ids)"),
            ("sqlite", "IN (SELECT value FROM json_each(:ids))"),
        )
    },
    results=(None, None, SUBJECTS.c.erased),
)


def load_users_facts(user_ids: Iterable[str], driver: Driver | None = None) -> dict[str, UserFacts]:
    """Load several users' subjects, choices and unlifted overrides: one statement, and a
    second for the overrides when any of them has one; in the caller's transaction (whose
    driver connection may be given)."""
    wanted = sorted(set(user_ids))
    driver = driver or Driver()
    ids = wanted if driver.postgres else json.dumps(wanted)
    return _users_facts(wanted, driver.rows(USER_FACTS, driver.execute(USER_FACTS, {"ids": ids})))


def _users_facts(wanted: list[str], rows: list[tuple[Any, ...]]) -> dict[str, UserFacts]:
    subjects: dict[str, SubjectFacts] = {}
    choices: dict[str, dict[str, ChoiceFacts]] = {u: {} for u in wanted}
    overridden = set()
    for user_id, jurisdiction, erased, purpose, state, source, version, notice, has in rows:
        subjects[user_id] = SubjectFacts(jurisdiction, bool(erased))
        if purpose is not None:
            choices[user_id][purpose] = ChoiceFacts(state, source, version, notice)
        if has:
            overridden.add(user_id)
    overrides: dict[str, dict[str, list[OverrideFacts]]] = {u: {} for u in wanted}
    if overridden:
        for o in db.session.execute(
            sa.select(Override).where(
                Override.user_id.in_(overridden), Override.lifted_seq.is_(None)
            )
        ).scalars():
            overrides[o.user_id].setdefault(o.purpose, []).append(override_facts(o))
    return {u: UserFacts(u, subjects.get(u), choices[u], overrides[u]) for u in wanted}


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
