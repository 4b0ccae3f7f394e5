"""Events about restrictions (orders that beat every choice) and purposes' notices.

A restriction over several purposes writes one event per purpose, so that a change feed
filtered by purpose carries every order about it; `changed` counts the known subjects whose
answer for that purpose (without a content time) the event changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from service.domain.events.base import JsonData, Kind, LedgerEvent, required, text, time_of
from service.domain.policy import RestrictionFacts, Window


@dataclass(frozen=True, slots=True, kw_only=True)
class RestrictionEvent(LedgerEvent):
    """An event about one restriction and one of its purposes."""

    purpose: str
    restriction_id: int
    changed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RestrictionPlaced(RestrictionEvent):
    """An admin placed a restriction (its reason and ticket are in the row's own columns)."""

    kind: ClassVar[Kind] = Kind.RESTRICTION_PLACED
    authority: str
    instrument: str
    purposes: tuple[str, ...]
    jurisdictions: tuple[str, ...]
    window_from: datetime | None = None
    window_to: datetime | None = None
    time_basis: str | None = None

    @property
    def window(self) -> Window | None:
        """The restriction's window, if it has one."""
        if self.window_from is None or self.window_to is None:
            return None
        return Window(self.window_from, self.window_to, self.time_basis or "processed")

    def facts(self, seq: int) -> RestrictionFacts:
        """What resolution needs, placed at seq (this event's)."""
        return RestrictionFacts(
            id=self.restriction_id,
            purposes=frozenset(self.purposes),
            jurisdictions=frozenset(self.jurisdictions),
            placed_seq=seq,
            window=self.window,
        )

    def to_data(self) -> JsonData:
        """{"restriction_id", "authority", "instrument", "purposes", "jurisdictions",
        "window": {"from", "to", "time_basis"} | null, "changed"}."""
        window = self.window
        return {
            "restriction_id": self.restriction_id,
            "authority": self.authority,
            "instrument": self.instrument,
            "purposes": list(self.purposes),
            "jurisdictions": list(self.jurisdictions),
            "window": None
            if window is None
            else {
                "from": window.start.isoformat(),
                "to": window.end.isoformat(),
                "time_basis": window.time_basis,
            },
            "changed": self.changed,
        }

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        window = data.get("window") or {}
        return cls(
            purpose=required(purpose),
            restriction_id=int(data["restriction_id"]),
            authority=str(data.get("authority", "")),
            instrument=str(data.get("instrument", "")),
            purposes=tuple(data.get("purposes") or (required(purpose),)),
            jurisdictions=tuple(data.get("jurisdictions") or ()),
            window_from=time_of(window, "from"),
            window_to=time_of(window, "to"),
            time_basis=text(window, "time_basis"),
            changed=int(data.get("changed", 0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RestrictionLifted(RestrictionEvent):
    """An admin lifted a restriction (the reason is in the row's own column)."""

    kind: ClassVar[Kind] = Kind.RESTRICTION_LIFTED

    def to_data(self) -> JsonData:
        """{"restriction_id", "changed"}."""
        return {"restriction_id": self.restriction_id, "changed": self.changed}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=required(purpose),
            restriction_id=int(data["restriction_id"]),
            changed=int(data.get("changed", 0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticePublished(LedgerEvent):
    """An admin published a version of a purpose's notice: what users are shown."""

    kind: ClassVar[Kind] = Kind.NOTICE_PUBLISHED
    purpose: str
    version: str
    text: str
    url: str | None = None

    def to_data(self) -> JsonData:
        """{"version", "text", "url"}."""
        return {"version": self.version, "text": self.text, "url": self.url}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=required(purpose),
            version=str(data["version"]),
            text=str(data.get("text", "")),
            url=text(data, "url"),
        )
