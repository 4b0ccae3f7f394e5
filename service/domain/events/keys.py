"""Events about API keys: created and revoked (in the audit feed, never the pipelines' one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from service.domain.events.base import JsonData, Kind, LedgerEvent


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
