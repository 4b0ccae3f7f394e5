"""Events about training runs: registered, members recorded, remediated (they name no user)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from service.domain.events.base import JsonData, Kind, LedgerEvent, required, text


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
            purpose=required(purpose),
            run_id=int(data["run_id"]),
            name=str(data["name"]),
            as_of=int(data["as_of"]),
            model=text(data, "model"),
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
            purpose=required(purpose),
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
            purpose=required(purpose),
            run_id=int(data["run_id"]),
            name=str(data["name"]),
            remediation_id=int(data["remediation_id"]),
            action=str(data["action"]),
            through_seq=int(data["through_seq"]),
        )
