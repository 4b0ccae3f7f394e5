"""Decisions for many IDs as of a seq: from the worker's in-memory index when it can answer,
from the database otherwise (before the index is built, or for IDs changed since `as_of`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from flask import Flask, current_app

from service.domain import validation
from service.domain.errors import NotFound
from service.ledger.keys import KEY_EVENTS, active_keys
from service.readindex.index import INVALID, ConsentIndex, Stale, build, encode, events_after
from service.reads import asof
from service.runtime.extensions import db
from service.web import metrics

log = logging.getLogger(__name__)

MODES = ("poll", "sync", "off")


@dataclass
class Follower:
    """One app's index and how it follows the ledger: a poll thread, or a catch-up per read."""

    mode: str
    poll_seconds: float
    # A head answer never reflects a ledger older than this; see ensure_current.
    max_lag: float = 1.0
    index: ConsentIndex | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    last_poll: float = 0.0
    # Active keys by token hash, kept by the poll thread (None: ask the database).
    keys: dict[str, tuple[str, str]] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    def start_now(self, app: Flask) -> None:
        """Build the index before serving (gunicorn's post_worker_init), then keep following.

        A worker that answered from the database while its index builds would be slow for its
        first seconds; building first keeps every answer on the fast path. A failed build is
        logged and left to the poll thread, which retries.
        """
        if self.mode != "poll":
            self.ensure_started(app)
            return
        try:
            with app.app_context():
                began = time.monotonic()
                index = build()
                self.index = index
                self.refresh()
                log.info(
                    "read index built at seq %d: %d subjects in %.1f s",
                    index.seq,
                    index.n_rows,
                    time.monotonic() - began,
                )
        except Exception:
            log.exception("read index build failed; the poll thread will retry")
        self.ensure_started(app)

    def refresh(self) -> None:
        """Catch the index up with the ledger's head and note when (in an app context)."""
        assert self.index is not None
        began, wall = time.monotonic(), time.time()
        if catch_up(self.index) or self.keys is None:
            self.keys = active_keys()
        self.last_poll = began
        metrics.index_caught_up(self.index.seq, wall)

    def current(self) -> bool:
        """Whether the index (and key cache) were last known current within max_lag seconds."""
        return time.monotonic() - self.last_poll <= self.max_lag

    def ensure_current(self) -> None:
        """In poll mode, catch up here when the poll thread has fallen behind (starved, or the
        database failing): a head answer never reflects a ledger older than max_lag, and when
        the database cannot be reached this raises, so the read fails closed."""
        if self.mode == "poll" and self.index is not None and not self.current():
            self.refresh()

    def ensure_started(self, app: Flask) -> None:
        """Start following: a background thread (poll) or a synchronous build (sync)."""
        if self.started or self.mode == "off":
            return
        with self.lock:
            if self.started:
                return
            self.started = True
            if self.mode == "sync":
                self.index = build()
                return
            threading.Thread(
                target=self._run, args=(app,), name="consent-index", daemon=True
            ).start()

    def stop(self) -> None:
        """Ask the poll thread to end (tests; a worker's thread ends with its process)."""
        self.stopping.set()

    def _run(self, app: Flask) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                with app.app_context():
                    if self.index is None:
                        began = time.monotonic()
                        self.index = build()
                        log.info(
                            "read index built at seq %d: %d subjects in %.1f s",
                            self.index.seq,
                            self.index.n_rows,
                            time.monotonic() - began,
                        )
                    self.refresh()
                failures = 0
            except Exception:  # an outage: answers come from what is held, or the database
                failures += 1
                log.exception("read index refresh failed (%d in a row)", failures)
            # Back off while the database is failing, up to 5 s between tries.
            self.stopping.wait(min(5.0, self.poll_seconds * 2 ** min(failures, 5)))


def init_app(app: Flask) -> None:
    """Attach a follower to the app, in the mode its configuration names."""
    mode = app.config.get("CONSENT_INDEX", "poll")
    if mode not in MODES:
        raise ValueError(f"CONSENT_INDEX must be one of {MODES}, not {mode!r}")
    follower = Follower(
        mode,
        float(app.config["CONSENT_INDEX_POLL_SECONDS"]),
        float(app.config.get("CONSENT_INDEX_MAX_LAG_SECONDS", 1.0)),
    )
    app.extensions["consent_index"] = follower
    if mode == "poll":
        # Each worker starts following at its first request of any kind (after gunicorn forks).
        app.before_request(lambda: follower.ensure_started(app))


def follower() -> Follower:
    """The current app's follower."""
    return current_app.extensions["consent_index"]  # type: ignore[no-any-return]


def catch_up(index: ConsentIndex) -> bool:
    """Apply every committed event after the index's seq; tell whether any concerned keys.

    Serialised per index: a request thread that must follow to a seq waits for (and then
    reuses) the poll thread's catch-up rather than applying the same events beside it.
    """
    keys_changed = False
    with index.follow_lock:
        while True:
            events = events_after(index.seq)
            index.apply(events)
            keys_changed = keys_changed or any(e.kind in KEY_EVENTS for e in events)
            if len(events) < 10_000:
                return keys_changed


def cached_key(token_hash: str) -> tuple[str, str] | None:
    """(name, role) of an active key from the poll thread's cache, if it has one."""
    f: Follower | None = current_app.extensions.get("consent_index")
    if f is None or f.keys is None:
        return None
    if f.mode == "poll" and not f.current():
        # A cache older than max_lag might still hold a revoked key: ask the database.
        return None
    return f.keys.get(token_hash)


def ready_index() -> ConsentIndex | None:
    """The index if it can answer now (caught up first in sync mode), else None."""
    f = follower()
    f.ensure_started(current_app._get_current_object())  # type: ignore[attr-defined]
    if f.index is not None and f.mode == "sync":
        catch_up(f.index)
    return f.index


def pin(as_of: str | None, purpose: str) -> int:
    """The seq a read answers as of: the index's head when not given (no database round trip).

    A purpose the index has not heard of may have been created since its last poll: it then
    catches up first, rather than answer 404 for a purpose that exists.
    """
    index = ready_index()
    if index is not None:
        text = (as_of or "").strip()
        if not text:
            follower().ensure_current()
            if purpose not in index.purposes:
                catch_up(index)
            return index.seq
        if asof.SEQ_RE.fullmatch(text) and int(text) <= index.seq:
            return int(text)
        if asof.SEQ_RE.fullmatch(text):
            catch_up(index)  # a seq someone just saw committed: follow to it before judging
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
            raise NotFound(f"Purpose {purpose!r} does not exist as of seq {seq}.")
        return
    asof.policy_as_of(purpose, seq)
    db.session.rollback()


CodeArray = np.ndarray[Any, np.dtype[np.uint8]]


def _from_memory(
    purpose: str,
    seq: int,
    answer: Callable[[ConsentIndex], tuple[CodeArray, list[int]]],
    texts_at: Callable[[list[int]], list[str]],
) -> CodeArray | None:
    """Codes from the index, with its stale positions answered by the database; None when the
    index cannot answer this seq at all."""
    index = ready_index()
    if index is None:
        return None
    try:
        out, stale = answer(index)
    except Stale:
        return None
    except KeyError:
        raise NotFound(f"Purpose {purpose!r} does not exist as of seq {seq}.") from None
    if stale:
        out[stale] = codes_from_database(purpose, seq, texts_at(stale))
    return out


def codes(purpose: str, seq: int, ids: pa.Array) -> CodeArray:
    """The code (state and basis) of each ID as of seq; INVALID for malformed IDs."""
    out = _from_memory(
        purpose,
        seq,
        lambda index: index.codes(purpose, seq, ids),
        lambda at: pa.array(ids).take(pa.array(at)).to_pylist(),
    )
    if out is not None:
        return out
    texts = pa.array(ids).to_pylist()
    valid = [i for i, t in enumerate(texts) if isinstance(t, str) and validation.is_user_id(t)]
    out = np.full(len(texts), INVALID, dtype=np.uint8)
    if valid:
        out[valid] = codes_from_database(purpose, seq, [texts[i] for i in valid])
    return out


def number_codes(purpose: str, seq: int, values: np.ndarray[Any, np.dtype[np.int64]]) -> CodeArray:
    """codes() for numeric IDs given as integers in [0, 10**18)."""
    out = _from_memory(
        purpose,
        seq,
        lambda index: index.number_codes(purpose, seq, values),
        lambda at: [str(v) for v in values[at]],
    )
    if out is not None:
        return out
    return codes(purpose, seq, pa.array([str(v) for v in values], pa.string()))


def code_of(purpose: str, seq: int, user_id: str) -> int:
    """The code of one well-formed ID as of seq: from memory when it can, else the database."""
    index = ready_index()
    if index is not None:
        try:
            code = index.code_of(purpose, seq, user_id)
        except Stale:
            code = None
        except KeyError:
            raise NotFound(f"Purpose {purpose!r} does not exist as of seq {seq}.") from None
        if code is not None:
            return code
    return codes_from_database(purpose, seq, [user_id])[0]


def codes_from_database(purpose: str, seq: int, user_ids: list[str]) -> list[int]:
    """Codes for well-formed IDs as of seq, resolved by the database."""
    pit = asof.PointInTime(seq, asof.event_time(seq))
    return [encode(r) for r in asof.decide(purpose, pit, user_ids)]


def pinned(purpose: str, as_of: str | None) -> int:
    """Fix the seq of a streamed read and check the purpose existed then.

    Done before the first byte is sent, so these problems are still proper error responses.
    """
    seq = pin(as_of, purpose)
    require_purpose(purpose, seq)
    return seq
