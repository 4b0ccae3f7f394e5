"""What every event is: its kind, the row it is stored in, and how payload fields are read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeAlias

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
    RESTRICTION_PLACED = "restriction_placed"
    RESTRICTION_LIFTED = "restriction_lifted"
    NOTICE_PUBLISHED = "notice_published"
    SIGNING_KEY_ROTATED = "signing_key_rotated"


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


def required(value: Any) -> Any:
    """The value of a column its kind requires (a row without it is refused)."""
    if value is None:
        raise ValueError("an event row lacks a column its kind requires")
    return value


def text(data: JsonData, name: str) -> str | None:
    """A text field of a payload, or None."""
    value = data.get(name)
    return value if isinstance(value, str) else None


def time_of(data: JsonData, name: str) -> datetime | None:
    """A time field of a payload (RFC 3339 text), or None."""
    value = data.get(name)
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None
