"""Training runs read back as of a seq: one run or many with their counts, and a user's runs.

Their member lists stream from run_streams.py; a run as an OpenLineage event is lineage.py.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.domain import validation
from service.domain.clock import isoformat
from service.domain.errors import Conflict, NotFound
from service.reads import decisions
from service.reads.affected import affected
from service.reads.consistent import head_seq, read_transaction
from service.reads.members import cache, member_key, members_of
from service.runtime.extensions import db, worker_state
from service.runtime.models import Run, RunMembers, RunRemediation

COUNTS_KEPT = 4096


@dataclass(frozen=True)
class Recorded:
    """What the ledger keeps about a run's members, besides the members themselves."""

    members: int
    not_allowed: int
    sha256: str
    recorded_at: datetime
    recorded_seq: int
    recorded_by: str


# ---------------------------------------------------------------- pinning and loading ------


def pin(as_of: str | None, *, at_least: int = 0) -> int:
    """The seq a runs read answers as of. Without `as_of`, the index's head, caught up first
    when what the read is about (a run just registered) was committed after its last poll."""
    seq = decisions.seq_for(as_of, None)
    if (as_of is None or not as_of.strip()) and seq < at_least:
        decisions.seq_for(str(at_least), None)
        seq = decisions.seq_for(None, None)
    return seq


def _run(run_id: int) -> Run:
    with read_transaction(consistent=False):
        run = db.session.get(Run, run_id)
        if run is None:
            raise NotFound(f"Run {run_id} does not exist.")
        db.session.expunge(run)
    return run


def pinned_run(run_id: int, as_of: str | None) -> tuple[Run, Recorded | None, int]:
    """A run, what was recorded of its members as of the pinned seq (None: nothing yet), and
    that seq; 404 for a run that did not exist as of it."""
    run = _run(run_id)
    recorded = _recorded([run_id]).get(run_id)
    latest = recorded.recorded_seq if recorded is not None else run.registered_seq
    seq = pin(as_of, at_least=latest)
    if run.registered_seq > seq:
        raise NotFound(f"Run {run_id} did not exist as of seq {seq}.")
    if recorded is not None and recorded.recorded_seq > seq:
        recorded = None
    return run, recorded, seq


def _recorded(run_ids: list[int]) -> dict[int, Recorded]:
    found: dict[int, Recorded] = {}
    with read_transaction(consistent=False):
        for start in range(0, len(run_ids), 500):
            rows = db.session.execute(
                sa.select(
                    RunMembers.run_id,
                    RunMembers.members,
                    RunMembers.not_allowed,
                    RunMembers.sha256,
                    RunMembers.recorded_at,
                    RunMembers.recorded_seq,
                    RunMembers.recorded_by,
                ).where(RunMembers.run_id.in_(run_ids[start : start + 500]))
            )
            for r in rows:
                found[r.run_id] = Recorded(
                    r.members, r.not_allowed, r.sha256, r.recorded_at, r.recorded_seq, r.recorded_by
                )
    return found


def _remediations(run_ids: list[int], seq: int) -> dict[int, list[RunRemediation]]:
    found: dict[int, list[RunRemediation]] = {r: [] for r in run_ids}
    with read_transaction(consistent=False):
        for start in range(0, len(run_ids), 500):
            rows = db.session.execute(
                sa.select(RunRemediation)
                .where(
                    RunRemediation.run_id.in_(run_ids[start : start + 500]),
                    RunRemediation.recorded_seq <= seq,
                )
                .order_by(RunRemediation.recorded_seq)
            ).scalars()
            for row in rows:
                found[row.run_id].append(row)
        db.session.expunge_all()
    return found


def require_members(run: Run, recorded: Recorded | None, seq: int) -> Recorded:
    if recorded is None:
        raise Conflict(
            f"Run {run.id} ({run.name}) had no members recorded as of seq {seq}; "
            f"send them with PUT /v1/runs/{run.id}/members."
        )
    return recorded


# ---------------------------------------------------------------- counts -------------------


class CountsCache:
    """(affected, outstanding) by (run, seq): a page shown twice at one head counts once."""

    def __init__(self) -> None:
        self.kept: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[int, int] | None:
        """The counts if kept."""
        with self.lock:
            return self.kept.get(key)

    def put(self, key: tuple[int, int], value: tuple[int, int]) -> None:
        """Keep counts, dropping the oldest beyond COUNTS_KEPT."""
        with self.lock:
            self.kept[key] = value
            while len(self.kept) > COUNTS_KEPT:
                self.kept.popitem(last=False)


def _counts_cache() -> CountsCache:
    return worker_state("consent_run_counts", CountsCache)


def counts(run: Run, seq: int, through: int | None) -> tuple[int, int]:
    """(affected, outstanding) as of seq. Outstanding: affected members whose denial began
    after `through` (the last remediation's through_seq), or every affected one without one."""
    kept = _counts_cache()
    found = kept.get((run.id, seq))
    if found is not None:
        return found
    total = outstanding = 0
    for part in affected(run.purpose, run.as_of, seq, members_of(run.id)):
        total += len(part.seqs)
        outstanding += len(part.seqs) if through is None else int((part.seqs > through).sum())
    kept.put((run.id, seq), (total, outstanding))
    return total, outstanding


# ---------------------------------------------------------------- documents ----------------


def dataset_document(run: Run) -> dict[str, Any] | None:
    """The run's dataset, or None when it gave none."""
    if run.dataset_uri is None:
        return None
    return {
        "uri": run.dataset_uri,
        "sha256": run.dataset_sha256,
        "rows_in": run.dataset_rows_in,
        "rows_kept": run.dataset_rows_kept,
    }


def remediation_document(r: RunRemediation) -> dict[str, Any]:
    """A remediation as a JSON-ready dict."""
    return {
        "id": r.id,
        "run_id": r.run_id,
        "action": r.action,
        "through_seq": r.through_seq,
        "reason": r.reason,
        "ticket": r.ticket,
        "recorded_at": isoformat(r.recorded_at),
        "recorded_seq": r.recorded_seq,
        "recorded_by": r.recorded_by,
    }


def run_document(
    run: Run,
    recorded: Recorded | None,
    seq: int,
    remediations: list[RunRemediation],
    *,
    with_remediations: bool = False,
) -> dict[str, Any]:
    """A run as a JSON-ready dict, its counts as of seq (None before its members were
    recorded)."""
    through = remediations[-1].through_seq if remediations else None
    affected_count = outstanding = None
    if recorded is not None:
        affected_count, outstanding = counts(run, seq, through)
    doc: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "purpose": run.purpose,
        "as_of": run.as_of,
        "model": run.model,
        "dataset": dataset_document(run),
        "registered_at": isoformat(run.registered_at),
        "registered_seq": run.registered_seq,
        "registered_by": run.registered_by,
        "members": recorded.members if recorded else None,
        "not_allowed": recorded.not_allowed if recorded else None,
        "affected": affected_count,
        "outstanding": outstanding,
        "members_sha256": recorded.sha256 if recorded else None,
        "members_recorded_seq": recorded.recorded_seq if recorded else None,
        "members_recorded_at": isoformat(recorded.recorded_at) if recorded else None,
        "remediated_through": through,
        "counts_as_of": seq,
    }
    if with_remediations:
        doc["remediations"] = [remediation_document(r) for r in remediations]
    return doc


def get_run(run_id: int, as_of: str | None) -> dict[str, Any]:
    """One run as of a seq, with its counts and remediations."""
    run, recorded, seq = pinned_run(run_id, as_of)
    remediations = _remediations([run.id], seq)[run.id]
    return run_document(run, recorded, seq, remediations, with_remediations=True)


def list_runs(
    purpose: str | None, model: str | None, as_of: str | None, limit: int, before: int | None
) -> dict[str, Any]:
    """Runs registered as of a seq, newest first, with their counts; `before` pages on by
    registered_seq."""
    seq = pin(as_of)
    query = sa.select(Run).where(Run.registered_seq <= seq)
    if purpose is not None:
        query = query.where(Run.purpose == purpose)
    if model is not None:
        query = query.where(Run.model == model)
    if before is not None:
        query = query.where(Run.registered_seq < before)
    with read_transaction(consistent=False):
        rows = list(
            db.session.execute(query.order_by(Run.registered_seq.desc()).limit(limit + 1))
            .scalars()
            .all()
        )
        db.session.expunge_all()
    page = rows[:limit]
    ids = [r.id for r in page]
    recorded = {k: v for k, v in _recorded(ids).items() if v.recorded_seq <= seq}
    remediations = _remediations(ids, seq)
    runs = [run_document(r, recorded.get(r.id), seq, remediations[r.id]) for r in page]
    has_more = len(rows) > limit
    return {
        "as_of": seq,
        "runs": runs,
        "has_more": has_more,
        "next_before": page[-1].registered_seq if has_more else None,
    }


# ---------------------------------------------------------------- a user's runs ------------


@dataclass(frozen=True)
class RunFacts:
    """What a user's runs list says of a run with recorded members (none of it ever changes)."""

    id: int
    name: str
    purpose: str
    as_of: int
    model: str | None
    registered_seq: int
    recorded_seq: int


class RecordedRuns:
    """Every run with members recorded, as this worker last read them, newest first.

    Runs and their members never change once written, and seqs are handed out in commit
    order, so a read only fetches the runs recorded after the last one it has seen, and none
    at all when the ledger has not moved past what it last looked at.
    """

    def __init__(self) -> None:
        self.runs: list[RunFacts] = []
        self.seen = 0  # the last recorded_seq held
        self.looked = 0  # the ledger head when the table was last read
        self.lock = threading.Lock()

    def as_of(self, seq: int) -> list[RunFacts]:
        """The runs whose members were recorded as of seq, newest registration first."""
        with self.lock:
            if seq > self.looked:
                self._follow()
            return [r for r in self.runs if r.recorded_seq <= seq]

    def _follow(self) -> None:
        with read_transaction():
            head, _ = head_seq()
            rows = db.session.execute(
                sa.select(
                    Run.id,
                    Run.name,
                    Run.purpose,
                    Run.as_of,
                    Run.model,
                    Run.registered_seq,
                    RunMembers.recorded_seq,
                )
                .join(RunMembers, RunMembers.run_id == Run.id)
                .where(RunMembers.recorded_seq > self.seen)
            ).all()
        if rows:
            self.runs.extend(RunFacts(*row) for row in rows)
            self.runs.sort(key=lambda r: r.registered_seq, reverse=True)
            self.seen = max(r.recorded_seq for r in self.runs)
        self.looked = head


def _recorded_runs() -> RecordedRuns:
    return worker_state("consent_recorded_runs", RecordedRuns)


def user_runs(user_id: str, as_of: str | None) -> dict[str, Any]:
    """The runs whose members include the user (members recorded as of the seq), newest
    first, each with whether the user is affected now (denied as of the seq)."""
    user_id = validation.user_id(user_id)
    seq = pin(as_of)
    runs = _recorded_runs().as_of(seq)
    sets = cache().get_many([r.id for r in runs])
    key = member_key(user_id)
    used = [r for r in runs if sets[r.id].has(key)]
    codes = {p: decisions.code_of(p, seq, user_id) for p in {r.purpose for r in used}}
    return {
        "user_id": user_id,
        "as_of": seq,
        "runs": [
            {
                "id": r.id,
                "name": r.name,
                "purpose": r.purpose,
                "as_of": r.as_of,
                "model": r.model,
                "affected": not codes[r.purpose].allowed,
                "basis": codes[r.purpose].basis,
            }
            for r in used
        ],
    }
