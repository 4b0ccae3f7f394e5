"""Training runs, the write side: registering a run, recording its members once, remediating."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import numpy as np
import sqlalchemy as sa

from consent_client.wire import ARROW_STREAM
from service.domain.errors import Conflict, NotFound, ValidationFailed
from service.domain.events import RunMembersRecorded, RunRegistered, RunRemediated
from service.domain.runs import REMEDIATION_ACTIONS, RUN_NAME_RE, RUN_NAME_RULE, SHA256_RE
from service.ledger import member_uploads
from service.ledger.transaction import Actor, LedgerWrite
from service.readindex import codes as cd
from service.reads import asof, decisions
from service.reads import runs as run_reads
from service.reads.consistent import read_transaction
from service.reads.members import MemberSet, cache, encode_codes
from service.runtime.extensions import db
from service.runtime.models import Purpose, Run, RunMembers, RunRemediation


def register(
    actor: Actor,
    name: str,
    purpose: str,
    as_of: str,
    model: str | None = None,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register a run that used the ledger's answer for purpose as of a seq (or time).

    The name is unique (409 on a second run of that name); the purpose must have existed as of
    that seq, and the seq must not be beyond the head (422).
    """
    if not RUN_NAME_RE.fullmatch(name):
        raise ValidationFailed(
            f"{name[:60]!r} is not a valid run name.",
            errors={"name": [f"Must be {RUN_NAME_RULE}."]},
        )
    _check_dataset(dataset)
    seq = asof.point_in_time(as_of).seq
    with LedgerWrite(actor) as w:
        created = db.session.execute(
            sa.select(Purpose.created_seq).where(Purpose.key == purpose)
        ).scalar_one_or_none()
        if created is None or created > seq:
            raise ValidationFailed(
                f"Purpose {purpose!r} did not exist as of seq {seq}.",
                errors={"purpose": [f"No such purpose as of seq {seq}."]},
            )
        taken = db.session.execute(sa.select(Run.id).where(Run.name == name)).scalar_one_or_none()
        if taken is not None:
            raise Conflict(f"A run named {name!r} exists already (run {taken}).")
        run = Run(
            name=name,
            purpose=purpose,
            as_of=seq,
            model=model,
            dataset_uri=dataset["uri"] if dataset else None,
            dataset_sha256=dataset["sha256"] if dataset else None,
            dataset_rows_in=dataset.get("rows_in") if dataset else None,
            dataset_rows_kept=dataset.get("rows_kept") if dataset else None,
            registered_at=w.at,
            registered_seq=w.head + 1,
            registered_by=actor.name,
        )
        db.session.add(run)
        db.session.flush()
        w.append(
            RunRegistered(
                purpose=purpose,
                run_id=run.id,
                name=name,
                as_of=seq,
                model=model,
                dataset=run_reads.dataset_document(run),
            )
        )
        doc = run_reads.run_document(run, None, w.head, [])
    return doc


def _check_dataset(dataset: dict[str, Any] | None) -> None:
    if dataset is None:
        return
    problems: dict[str, list[str]] = {}
    if not SHA256_RE.fullmatch(str(dataset.get("sha256", ""))):
        problems["dataset.sha256"] = ["Must be 64 lower-case hexadecimal digits."]
    rows_in, rows_kept = dataset.get("rows_in"), dataset.get("rows_kept")
    if rows_in is not None and rows_kept is not None and rows_kept > rows_in:
        problems["dataset.rows_kept"] = [f"Must be at most rows_in ({rows_in})."]
    if problems:
        raise ValidationFailed("The dataset is invalid.", errors=problems)


def _unrecorded_run(run_id: int) -> Run:
    run = db.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"Run {run_id} does not exist.")
    recorded = db.session.get(RunMembers, run_id)
    if recorded is not None:
        raise Conflict(
            f"Run {run_id} ({run.name}) has its members already, recorded at seq "
            f"{recorded.recorded_seq}; members are recorded once and never changed."
        )
    return run


def record_members(actor: Actor, run_id: int, body: IO[bytes], media_type: str) -> dict[str, Any]:
    """Record a run's members from a streamed body (newline text, or an Arrow IPC stream of
    one string or integer column), once: a second upload is a 409, and a malformed ID refuses
    the whole upload (422) with nothing stored.

    Each member's decision as of the run's as_of is kept beside them: the members not allowed
    then are the run's violations, counted in `not_allowed`.
    """
    with read_transaction(consistent=False):
        run = _unrecorded_run(run_id)
        purpose, as_of = run.purpose, run.as_of
    if media_type == ARROW_STREAM:
        members = member_uploads.from_arrow(body)
    else:
        members = member_uploads.from_text(body)
    # The stored form and the digest (Parquet and hashlib, both outside the GIL) are made on a
    # thread while the codes are looked up here.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-members") as beside:
        stored = beside.submit(lambda: (members.encode(), members.sha256()))
        codes = _codes_at(purpose, as_of, members)
        not_allowed = int(np.count_nonzero(~cd.allowed(codes)))
        stored_codes = encode_codes(codes)
        (numbers, strings), digest = stored.result()
    with LedgerWrite(actor) as w:
        run = _unrecorded_run(run_id)
        db.session.add(
            RunMembers(
                run_id=run.id,
                members=len(members),
                not_allowed=not_allowed,
                sha256=digest,
                numbers=numbers,
                strings=strings,
                codes=stored_codes,
                recorded_at=w.at,
                recorded_seq=w.head + 1,
                recorded_by=actor.name,
            )
        )
        w.append(
            RunMembersRecorded(
                purpose=run.purpose,
                run_id=run.id,
                name=run.name,
                members=len(members),
                not_allowed=not_allowed,
                sha256=digest,
            )
        )
        recorded = run_reads.Recorded(len(members), not_allowed, digest, w.at, w.head, actor.name)
        db.session.expunge(run)
    cache().keep(run_id, members)  # committed: this worker need not decode them again
    seq = run_reads.pin(str(w.head))  # the counts are as of this write: follow to it first
    return run_reads.run_document(run, recorded, seq, [])


def _codes_at(purpose: str, seq: int, members: MemberSet) -> cd.CodeArray:
    """Each member's decision code as of seq, in member order (numbers, then the others)."""
    decisions.seq_for(str(seq), purpose)  # follow the index up to seq first if it is behind
    numbers = decisions.number_codes(purpose, seq, members.numbers)
    strings = decisions.codes(purpose, seq, members.strings)
    return cd.as_codes(np.concatenate([numbers, strings]))


def remediate(
    actor: Actor,
    run_id: int,
    action: str,
    through_seq: int,
    reason: str,
    ticket: str | None = None,
) -> dict[str, Any]:
    """Declare the run's members affected by events up to through_seq handled.

    through_seq must lie between the run's as_of and the head, and not before the last
    remediation's (422); a run without members has nothing to remediate (409).
    """
    if action not in REMEDIATION_ACTIONS:
        raise ValidationFailed(
            f"{action!r} is not a remediation action.",
            errors={"action": [f"One of {', '.join(REMEDIATION_ACTIONS)}."]},
        )
    with LedgerWrite(actor) as w:
        run = db.session.get(Run, run_id)
        if run is None:
            raise NotFound(f"Run {run_id} does not exist.")
        if db.session.get(RunMembers, run_id) is None:
            raise Conflict(f"Run {run_id} ({run.name}) has no members recorded to remediate.")
        if through_seq > w.head:
            raise ValidationFailed(
                f"through_seq {through_seq} is beyond the ledger head ({w.head}).",
                errors={"through_seq": [f"Must be at most {w.head}."]},
            )
        if through_seq < run.as_of:
            raise ValidationFailed(
                f"through_seq {through_seq} is before the run's as_of ({run.as_of}).",
                errors={"through_seq": [f"Must be at least {run.as_of}."]},
            )
        last = db.session.execute(
            sa.select(sa.func.max(RunRemediation.through_seq)).where(
                RunRemediation.run_id == run_id
            )
        ).scalar_one()
        if last is not None and through_seq < last:
            raise ValidationFailed(
                f"through_seq {through_seq} is before the last remediation's ({last}).",
                errors={"through_seq": [f"Must be at least {last}."]},
            )
        row = RunRemediation(
            run_id=run_id,
            action=action,
            through_seq=through_seq,
            reason=reason,
            ticket=ticket,
            recorded_at=w.at,
            recorded_seq=w.head + 1,
            recorded_by=actor.name,
        )
        db.session.add(row)
        db.session.flush()
        w.append(
            RunRemediated(
                purpose=run.purpose,
                run_id=run_id,
                name=run.name,
                remediation_id=row.id,
                action=action,
                through_seq=through_seq,
            ),
            reason=reason,
            ticket=ticket,
        )
        doc = run_reads.remediation_document(row)
    return doc
