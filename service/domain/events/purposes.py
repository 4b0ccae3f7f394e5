"""Events about purposes: creating one, and changing its title or its default policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from service.domain.events.base import JsonData, Kind, LedgerEvent, required
from service.domain.policy import Policy


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent(LedgerEvent):
    """An event that sets a purpose's default policy (creating it, or changing it)."""

    purpose: str
    defaults: Mapping[str, str]
    unknown_subject: str
    legal_bases: Mapping[str, str] = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        """The default policy (and legal bases) in force from this event on."""
        return Policy.of(self.defaults, self.unknown_subject, self.legal_bases)

    def policy_data(self) -> JsonData:
        """The policy's part of the payload; `legal_bases` only when set, so payloads written
        before legal bases existed read back unchanged."""
        data: JsonData = {"defaults": dict(self.defaults), "unknown_subject": self.unknown_subject}
        if self.legal_bases:
            data["legal_bases"] = dict(self.legal_bases)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class PurposeCreated(PolicyEvent):
    """An admin created a purpose with its first default policy."""

    kind: ClassVar[Kind] = Kind.PURPOSE_CREATED
    title: str
    honours_gpc: bool = False

    def to_data(self) -> JsonData:
        """{"title", "defaults", "unknown_subject", "legal_bases"?, "honours_gpc"?}."""
        data = {"title": self.title, **self.policy_data()}
        if self.honours_gpc:  # only when set, so earlier payloads read back unchanged
            data["honours_gpc"] = True
        return data

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=required(purpose),
            title=str(data.get("title", "")),
            defaults=dict(data["defaults"]),
            unknown_subject=str(data["unknown_subject"]),
            legal_bases=dict(data.get("legal_bases") or {}),
            honours_gpc=data.get("honours_gpc") is True,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PurposeChange(PolicyEvent):
    """An admin changed a purpose: the fields before and after, and the policy in force after."""

    before: JsonData = field(default_factory=dict)
    after: JsonData = field(default_factory=dict)

    def to_data(self) -> JsonData:
        """{"before", "after", "defaults", "unknown_subject", "legal_bases"?}."""
        return {"before": dict(self.before), "after": dict(self.after), **self.policy_data()}

    @classmethod
    def from_data(cls, user_id: str | None, purpose: str | None, data: JsonData) -> LedgerEvent:
        """Rebuild from the row."""
        return cls(
            purpose=required(purpose),
            before=dict(data.get("before") or {}),
            after=dict(data.get("after") or {}),
            defaults=dict(data["defaults"]),
            unknown_subject=str(data["unknown_subject"]),
            legal_bases=dict(data.get("legal_bases") or {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyChanged(PurposeChange):
    """A change that touched the default policy: answers as of later seqs follow the new one."""

    kind: ClassVar[Kind] = Kind.POLICY_CHANGED


@dataclass(frozen=True, slots=True, kw_only=True)
class PurposeUpdated(PurposeChange):
    """A change to a purpose's title or description only: no answer changes."""

    kind: ClassVar[Kind] = Kind.PURPOSE_UPDATED
