"""Events about one user's consent: registration, jurisdiction, erasure, choices, overrides."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from service.domain.clock import isoformat
from service.domain.events.base import JsonData, Kind, LedgerEvent, required, text, time_of


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
            user_id=required(user_id), purpose=purpose, jurisdiction=text(data, "jurisdiction")
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
            user_id=required(user_id),
            purpose=purpose,
            previous=text(data, "from"),
            jurisdiction=text(data, "to"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectErased(LedgerEvent):
    """A user's account was deleted: every purpose is denied from here on."""

    kind: ClassVar[Kind] = Kind.SUBJECT_ERASED
    user_id: str

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(user_id=required(user_id), purpose=purpose)


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
    notice_version: str | None = None

    def to_data(self) -> JsonData:
        """{"state", "previous", "source", "version", "notice_version"?}."""
        data: JsonData = {
            "state": self.state,
            "previous": self.previous,
            "source": self.source,
            "version": self.version,
        }
        if self.notice_version is not None:
            data["notice_version"] = self.notice_version
        return data

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            user_id=required(user_id),
            purpose=required(purpose),
            state=str(data.get("state")),
            previous=text(data, "previous"),
            source=str(data.get("source", "")),
            version=int(data.get("version", 0)),
            notice_version=text(data, "notice_version"),
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
            user_id=required(user_id),
            purpose=required(purpose),
            override_id=int(data["override_id"]),
            state=str(data.get("state")),
            expires_at=time_of(data, "expires_at"),
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
            user_id=required(user_id),
            purpose=required(purpose),
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
        expires = time_of(data, "expires_at")
        return cls(
            user_id=required(user_id),
            purpose=required(purpose),
            override_id=int(data["override_id"]),
            expires_at=required(expires),
        )
