"""Event kinds of the ledger: one frozen dataclass per kind, the only definition of its payload.

Events are append-only and kept for good, so a payload's shape is permanent: each class says
which columns it fills and what goes into the row's JSON `data`, `to_data()` writes exactly that
and `from_data()` reads it back (rows written before these types existed included). The writer
takes these types, and every reader (the read index, as_of, history, feeds, the console)
dispatches on them instead of on kind strings and free dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeAlias

from service.domain.clock import isoformat
from service.domain.policy import Policy

JsonData: TypeAlias = dict[str, Any]


class Kind(StrEnum):
    """Every kind of event the ledger writes; the value is what the `kind` column holds."""

    SUBJECT_REGISTERED = "subject_registered"
    JURISDICTION_CHANGED = "jurisdiction_changed"
    SUBJECT_ERASED = "subject_erased"
    CHOICE_SET = "choice_set"
    OVERRIDE_PLACED = "override_placed"
    OVERRIDE_LIFTED = "override_lifted"
    OVERRIDE_EXPIRED = "override_expired"
    PURPOSE_CREATED = "purpose_created"
    PURPOSE_UPDATED = "purpose_updated"
    POLICY_CHANGED = "policy_changed"
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"
    RUN_REGISTERED = "run_registered"
    RUN_MEMBERS_RECORDED = "run_members_recorded"
    RUN_REMEDIATED = "run_remediated"


class EventRow(Protocol):
    """The columns of an event row that typing it needs (an ORM row or a selected tuple)."""

    @property
    def kind(self) -> str: ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def purpose(self) -> str | None: ...

    @property
    def data(self) -> JsonData | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEvent:
    """What every event is about: a user and a purpose, either of which a kind may leave empty."""

    kind: ClassVar[Kind]
    user_id: str | None = None
    purpose: str | None = None

    def to_data(self) -> JsonData | None:
        """The row's JSON `data` for this event (None: the kind has no payload)."""
        return None

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild the event from its row's columns and `data` (already defaulted to {})."""
        return cls(user_id=user_id, purpose=purpose)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectRegistered(LedgerEvent):
    """A user the ledger had not seen, with their jurisdiction (one event per purpose)."""

    kind: ClassVar[Kind] = Kind.SUBJECT_REGISTERED
    user_id: str
    jurisdiction: str | None

    def to_data(self) -> JsonData:
        """{"jurisdiction": …}."""
        return {"jurisdiction": self.jurisdiction}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            user_id=_required(user_id), purpose=purpose, jurisdiction=_text(data, "jurisdiction")
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class JurisdictionChanged(LedgerEvent):
    """A user's jurisdiction moved from one code (or none) to another."""

    kind: ClassVar[Kind] = Kind.JURISDICTION_CHANGED
    user_id: str
    previous: str | None
    jurisdiction: str | None

    def to_data(self) -> JsonData:
        """{"from": …, "to": …}."""
        return {"from": self.previous, "to": self.jurisdiction}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            user_id=_required(user_id),
            purpose=purpose,
            previous=_text(data, "from"),
            jurisdiction=_text(data, "to"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectErased(LedgerEvent):
    """A user's account was deleted: every purpose is denied from here on."""

    kind: ClassVar[Kind] = Kind.SUBJECT_ERASED
    user_id: str

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(user_id=_required(user_id), purpose=purpose)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChoiceSet(LedgerEvent):
    """A user's own choice for one purpose, with the record's new version."""

    kind: ClassVar[Kind] = Kind.CHOICE_SET
    user_id: str
    purpose: str
    state: str
    previous: str | None
    source: str
    version: int

    def to_data(self) -> JsonData:
        """{"state", "previous", "source", "version"}."""
        return {
            "state": self.state,
            "previous": self.previous,
            "source": self.source,
            "version": self.version,
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            user_id=_required(user_id),
            purpose=_required(purpose),
            state=str(data.get("state")),
            previous=_text(data, "previous"),
            source=str(data.get("source", "")),
            version=int(data.get("version", 0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OverridePlaced(LedgerEvent):
    """Support placed an override (its reason and ticket are in the row's own columns)."""

    kind: ClassVar[Kind] = Kind.OVERRIDE_PLACED
    user_id: str
    purpose: str
    override_id: int
    state: str
    expires_at: datetime | None

    def to_data(self) -> JsonData:
        """{"override_id", "state", "expires_at"}."""
        return {
            "override_id": self.override_id,
            "state": self.state,
            "expires_at": isoformat(self.expires_at),
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            user_id=_required(user_id),
            purpose=_required(purpose),
            override_id=int(data["override_id"]),
            state=str(data.get("state")),
            expires_at=_time(data, "expires_at"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideLifted(LedgerEvent):
    """Support lifted an override before its expiry."""

    kind: ClassVar[Kind] = Kind.OVERRIDE_LIFTED
    user_id: str
    purpose: str
    override_id: int

    def to_data(self) -> JsonData:
        """{"override_id"}."""
        return {"override_id": self.override_id}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            user_id=_required(user_id),
            purpose=_required(purpose),
            override_id=int(data["override_id"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideExpired(LedgerEvent):
    """An override's expiry fell due (recorded by the system at the next write)."""

    kind: ClassVar[Kind] = Kind.OVERRIDE_EXPIRED
    user_id: str
    purpose: str
    override_id: int
    expires_at: datetime

    def to_data(self) -> JsonData:
        """{"override_id", "expires_at"}."""
        return {"override_id": self.override_id, "expires_at": isoformat(self.expires_at)}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        expires = _time(data, "expires_at")
        return cls(
            user_id=_required(user_id),
            purpose=_required(purpose),
            override_id=int(data["override_id"]),
            expires_at=_required(expires),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent(LedgerEvent):
    """An event that sets a purpose's default policy (creating it, or changing it)."""

    purpose: str
    defaults: Mapping[str, str]
    unknown_subject: str

    @property
    def policy(self) -> Policy:
        """The default policy in force from this event on."""
        return Policy.of(self.defaults, self.unknown_subject)


@dataclass(frozen=True, slots=True, kw_only=True)
class PurposeCreated(PolicyEvent):
    """An admin created a purpose with its first default policy."""

    kind: ClassVar[Kind] = Kind.PURPOSE_CREATED
    title: str

    def to_data(self) -> JsonData:
        """{"title", "defaults", "unknown_subject"}."""
        return {
            "title": self.title,
            "defaults": dict(self.defaults),
            "unknown_subject": self.unknown_subject,
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=_required(purpose),
            title=str(data.get("title", "")),
            defaults=dict(data["defaults"]),
            unknown_subject=str(data["unknown_subject"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PurposeChange(PolicyEvent):
    """An admin changed a purpose: the fields before and after, and the policy in force after."""

    before: JsonData = field(default_factory=dict)
    after: JsonData = field(default_factory=dict)

    def to_data(self) -> JsonData:
        """{"before", "after", "defaults", "unknown_subject"}."""
        return {
            "before": dict(self.before),
            "after": dict(self.after),
            "defaults": dict(self.defaults),
            "unknown_subject": self.unknown_subject,
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=_required(purpose),
            before=dict(data.get("before") or {}),
            after=dict(data.get("after") or {}),
            defaults=dict(data["defaults"]),
            unknown_subject=str(data["unknown_subject"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyChanged(PurposeChange):
    """A change that touched the default policy: answers as of later seqs follow the new one."""

    kind: ClassVar[Kind] = Kind.POLICY_CHANGED


@dataclass(frozen=True, slots=True, kw_only=True)
class PurposeUpdated(PurposeChange):
    """A change to a purpose's title or description only: no answer changes."""

    kind: ClassVar[Kind] = Kind.PURPOSE_UPDATED


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyEvent(LedgerEvent):
    """An API key's life: who it names and the role it carries."""

    name: str
    role: str

    def to_data(self) -> JsonData:
        """{"name", "role"}."""
        return {"name": self.name, "role": self.role}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(name=str(data.get("name", "")), role=str(data.get("role", "")))


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCreated(KeyEvent):
    """An admin created an API key."""

    kind: ClassVar[Kind] = Kind.KEY_CREATED


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRevoked(KeyEvent):
    """An admin revoked an API key; every worker refuses it from now on."""

    kind: ClassVar[Kind] = Kind.KEY_REVOKED


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent(LedgerEvent):
    """Something about a training run: which run (by id and name), under which purpose."""

    purpose: str
    run_id: int
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRegistered(RunEvent):
    """A pipeline registered a training run that used the ledger's answer as of `as_of`."""

    kind: ClassVar[Kind] = Kind.RUN_REGISTERED
    as_of: int
    model: str | None
    dataset: JsonData | None

    def to_data(self) -> JsonData:
        """{"run_id", "name", "as_of", "model", "dataset"}."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "as_of": self.as_of,
            "model": self.model,
            "dataset": None if self.dataset is None else dict(self.dataset),
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        dataset = data.get("dataset")
        return cls(
            purpose=_required(purpose),
            run_id=int(data["run_id"]),
            name=str(data["name"]),
            as_of=int(data["as_of"]),
            model=_text(data, "model"),
            dataset=dict(dataset) if isinstance(dataset, dict) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMembersRecorded(RunEvent):
    """The distinct user IDs a run used were recorded (once, never changed), and how many of
    them the ledger did not allow as of the run's as_of."""

    kind: ClassVar[Kind] = Kind.RUN_MEMBERS_RECORDED
    members: int
    not_allowed: int
    sha256: str

    def to_data(self) -> JsonData:
        """{"run_id", "name", "members", "not_allowed", "sha256"}."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "members": self.members,
            "not_allowed": self.not_allowed,
            "sha256": self.sha256,
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=_required(purpose),
            run_id=int(data["run_id"]),
            name=str(data["name"]),
            members=int(data["members"]),
            not_allowed=int(data["not_allowed"]),
            sha256=str(data.get("sha256", "")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRemediated(RunEvent):
    """Support declared a run's affected members up to `through_seq` handled (its reason and
    ticket are in the row's own columns)."""

    kind: ClassVar[Kind] = Kind.RUN_REMEDIATED
    remediation_id: int
    action: str
    through_seq: int

    def to_data(self) -> JsonData:
        """{"run_id", "name", "remediation_id", "action", "through_seq"}."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "remediation_id": self.remediation_id,
            "action": self.action,
            "through_seq": self.through_seq,
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=_required(purpose),
            run_id=int(data["run_id"]),
            name=str(data["name"]),
            remediation_id=int(data["remediation_id"]),
            action=str(data["action"]),
            through_seq=int(data["through_seq"]),
        )


EVENT_TYPES: Mapping[Kind, type[LedgerEvent]] = {
    t.kind: t
    for t in (
        SubjectRegistered,
        JurisdictionChanged,
        SubjectErased,
        ChoiceSet,
        OverridePlaced,
        OverrideLifted,
        OverrideExpired,
        PurposeCreated,
        PolicyChanged,
        PurposeUpdated,
        KeyCreated,
        KeyRevoked,
        RunRegistered,
        RunMembersRecorded,
        RunRemediated,
    )
}
POLICY_KINDS: tuple[Kind, ...] = (Kind.PURPOSE_CREATED, Kind.POLICY_CHANGED)
KEY_KINDS: frozenset[Kind] = frozenset({Kind.KEY_CREATED, Kind.KEY_REVOKED})
JURISDICTION_KINDS: tuple[Kind, ...] = (Kind.SUBJECT_REGISTERED, Kind.JURISDICTION_CHANGED)


class UnknownEventKind(Exception):
    """A row's kind names no event type: the log holds something this code cannot read."""


def from_row(row: EventRow) -> LedgerEvent:
    """The typed event of a row of the events table."""
    try:
        kind = Kind(row.kind)
    except ValueError:
        raise UnknownEventKind(row.kind) from None
    return EVENT_TYPES[kind].from_data(row.user_id, row.purpose, row.data or {})


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError("an event row lacks a column its kind requires")
    return value


def _text(data: JsonData, name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _time(data: JsonData, name: str) -> datetime | None:
    value = data.get(name)
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None
