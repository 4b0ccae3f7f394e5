"""Decisions for many IDs as of a seq: from the worker's in-memory index when it can answer,
from the database otherwise (before the index is built, or for IDs changed since `as_of`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from service.domain import validation
from service.domain.errors import NotFound
from service.readindex import codes as cd
from service.readindex.codes import CodeArray
from service.readindex.follow import follow, follower, ready_index
from service.readindex.index import Answer, ConsentIndex, Earlier, Stale, Times, UnknownPurpose
from service.reads import asof, content_times
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Event

# An as_of before the index's build is answered from it when at most this many users have
# events since; beyond that the database answers everyone, as it would anyway. It also bounds
# how many such users a worker keeps, over all the seqs it remembers.
EARLIER_USERS = 1_000_000
EARLIER_KEPT = 64


def seq_for(as_of: str | None, purpose: str | None) -> int:
    """The seq a read answers as of: the index's head when not given (no database round trip).

    A purpose the index has not heard of may have been created since its last poll: it then
    catches up first, rather than answer 404 for a purpose that exists. (None: a read about
    no one purpose.)
    """
    index = ready_index()
    if index is not None:
        text = (as_of or "").strip()
        if not text:
            # An index too far behind to catch up here (a bulk import landed; the poll thread
            # rebuilds it) cannot answer the head: the database does, as of its head.
            if not follower().ensure_current():
                return asof.point_in_time(None).seq
            if purpose is not None and purpose not in index.purposes and not follow(index):
                return asof.point_in_time(None).seq
            return index.seq
        if asof.SEQ_RE.fullmatch(text) and int(text) <= index.seq:
            return int(text)
        if asof.SEQ_RE.fullmatch(text):
            follow(index)  # a seq someone just saw committed: follow to it before judging
            if int(text) <= index.seq:
                return int(text)
    return asof.point_in_time(as_of).seq


def require_purpose(purpose: str, seq: int) -> None:
    """404 unless the purpose existed as of seq."""
    validation.purpose_key(purpose)
    index = ready_index()
    if index is not None and seq >= index.built_seq and seq <= index.seq:
        p = index.purposes.get(purpose)
        if p is None or p.created_seq > seq:
            raise _not_found(UnknownPurpose(purpose, seq))
        return
    with read_transaction():
        asof.policy_as_of(purpose, seq)


def _not_found(unknown: UnknownPurpose) -> NotFound:
    return NotFound(f"Purpose {unknown.purpose!r} does not exist as of seq {unknown.seq}.")


def earlier(index: ConsentIndex, seq: int) -> Earlier | None:
    """What the index needs to answer as of a seq before its build: the users with events
    between that seq and the build (kept per index for the seqs last asked). None when the
    seq is not before the build, or too many users changed since."""
    if seq >= index.built_seq:
        return None
    kept = index.earlier
    with index.lock:
        if seq in kept:
            return kept[seq]
    with read_transaction(consistent=False):
        users = db.session.execute(
            sa.select(Event.user_id)
            .where(Event.seq > seq, Event.seq <= index.built_seq, Event.user_id.is_not(None))
            .distinct()
            .limit(EARLIER_USERS + 1)
        ).scalars()
        found = frozenset(u for u in users if u is not None)
    result = Earlier(seq, found) if len(found) <= EARLIER_USERS else None
    with index.lock:
        kept[seq] = result
        # Bounded by the users held, not only by how many seqs: a few far-back seqs hold many.
        while len(kept) > EARLIER_KEPT or sum(len(e.user_ids) for e in kept.values() if e) > (
            EARLIER_USERS
        ):
            kept.pop(next(iter(kept)))
    return result


def _from_memory(
    purpose: str,
    seq: int,
    answer: Callable[[ConsentIndex, Earlier | None], tuple[CodeArray, list[int]]],
    texts_at: Callable[[list[int]], list[str]],
    times: Times | None = None,
) -> CodeArray | None:
    """Codes from the index, with its stale positions answered by the database; None when the
    index cannot answer this seq at all."""
    index = ready_index()
    if index is None:
        return None
    try:
        out, stale = answer(index, earlier(index, seq))
    except Stale:
        return None
    except UnknownPurpose as unknown:
        raise _not_found(unknown) from None
    if stale:
        out[stale] = codes_from_database(
            purpose, seq, texts_at(stale), content_times.datetimes(times, stale)
        )
    return out


def codes(purpose: str, seq: int, ids: pa.Array, times: Times | None = None) -> CodeArray:
    """The code (state and basis) of each ID as of seq; cd.INVALID for malformed IDs. With
    `times` (aligned, NO_TIME where none), each answer is for content of that time."""
    out = _from_memory(
        purpose,
        seq,
        lambda index, before: index.codes(purpose, seq, ids, before, times),
        lambda at: pa.array(ids).take(pa.array(at)).to_pylist(),
        times,
    )
    if out is not None:
        return out
    texts = pa.array(ids).to_pylist()
    valid = [i for i, t in enumerate(texts) if isinstance(t, str) and validation.is_user_id(t)]
    out = cd.full(len(texts), cd.INVALID)
    if valid:
        out[valid] = codes_from_database(
            purpose, seq, [texts[i] for i in valid], content_times.datetimes(times, valid)
        )
    return out


def number_codes(
    purpose: str,
    seq: int,
    values: np.ndarray[Any, np.dtype[np.int64]],
    times: Times | None = None,
) -> CodeArray:
    """codes() for numeric IDs given as integers in [0, 10**18)."""
    out = _from_memory(
        purpose,
        seq,
        lambda index, before: index.number_codes(purpose, seq, values, before, times),
        lambda at: [str(v) for v in values[at]],
        times,
    )
    if out is not None:
        return out
    return codes(purpose, seq, pa.array([str(v) for v in values], pa.string()), times)


def code_of(purpose: str, seq: int, user_id: str, content_time: datetime | None = None) -> cd.Code:
    """The code of one well-formed ID as of seq (for content of that time, if given): from
    memory when it can, else the database."""
    return answer_of(purpose, seq, user_id, content_time).code


def answer_of(purpose: str, seq: int, user_id: str, content_time: datetime | None = None) -> Answer:
    """One well-formed ID's answer as of seq, for content of that time if given (code, legal
    basis, notice version, the restriction denying it): from memory when it can, else the
    database."""
    index = ready_index()
    if index is not None:
        try:
            answer = index.answer_of(purpose, seq, user_id, earlier(index, seq), content_time)
        except Stale:
            answer = None
        except UnknownPurpose as unknown:
            raise _not_found(unknown) from None
        if answer is not None:
            return answer
    pit = asof.PointInTime(seq, asof.event_time(seq))
    found = asof.decided(purpose, pit, [user_id], [content_time])[0]
    res = found.resolution
    return Answer(cd.Code.of(res), res.legal_basis, found.notice_version, res.restriction)


def codes_from_database(
    purpose: str,
    seq: int,
    user_ids: list[str],
    times: list[datetime | None] | None = None,
) -> list[int]:
    """Codes for well-formed IDs as of seq (each for content of its time, if given),
    resolved by the database."""
    pit = asof.PointInTime(seq, asof.event_time(seq))
    return [cd.encode(r) for r in asof.decide(purpose, pit, user_ids, times)]


def seq_checked(purpose: str, as_of: str | None) -> int:
    """Fix the seq of a streamed read and check the purpose existed then.

    Done before the first byte is sent, so these problems are still proper error responses.
    """
    seq = seq_for(as_of, purpose)
    require_purpose(purpose, seq)
    return seq
