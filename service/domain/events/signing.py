"""Events about the ledger's signing keys (in the audit feed, never the pipelines' one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from service.domain.clock import isoformat
from service.domain.events.base import JsonData, Kind, LedgerEvent, text, time_of


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRotated(LedgerEvent):
    """A new signing key signs from now on; the one before it (none for the first key) stops
    signing and stays published for checking until `previous_expires_at`."""

    kind: ClassVar[Kind] = Kind.SIGNING_KEY_ROTATED
    kid: str
    previous_kid: str | None = None
    previous_expires_at: datetime | None = None

    def to_data(self) -> JsonData:
        """{"kid", "previous_kid", "previous_expires_at"}: key IDs only, never key material."""
        return {
            "kid": self.kid,
            "previous_kid": self.previous_kid,
            "previous_expires_at": isoformat(self.previous_expires_at),
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            kid=str(data.get("kid", "")),
            previous_kid=text(data, "previous_kid"),
            previous_expires_at=time_of(data, "previous_expires_at"),
        )
