"""Following the ledger: building a worker's index, then applying the events after its seq,
from a poll thread (or per read, in sync mode), with the key cache kept current beside it.

An index further behind the head than CONSENT_INDEX_REBUILD_LAG events (a bulk import landed)
is not caught up event by event: the poll thread builds a new one from the state tables beside
it and swaps it in, once the import has ended (PostgreSQL tells: every import holds an advisory
lock), or else at most every other rebuild's time. Meanwhile the old one answers what it still
holds (as_of seqs up to its own), and head reads, which it may not answer once it is older than
the max lag, go to the database, as they do whenever the index cannot answer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Flask, current_app

from service.domain import events as ev
from service.ledger.imports import import_running
from service.ledger.keys import KeyCache
from service.readindex.build import build
from service.readindex.index import ConsentIndex, RecordedEvent
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Event, LedgerHead
from service.web import metrics

log = logging.getLogger(__name__)

MODES = ("poll", "sync", "off")
FETCH = 10_000
DEFAULT_REBUILD_LAG = 100_000


class TooFarBehind(Exception):
    """The index trails the head by more events than replaying them one by one is worth."""

    def __init__(self, lag: int) -> None:
        super().__init__(lag)
        self.lag = lag


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
    # Active keys by token hash, reloaded and marked current by the poll thread.
    keys: KeyCache = field(default_factory=lambda: KeyCache(1.0))
    stopping: threading.Event = field(default_factory=threading.Event)
    # Further behind than this many events, the index is built anew rather than caught up.
    rebuild_lag: int = DEFAULT_REBUILD_LAG
    rebuilding: bool = False
    # While a bulk import is still landing, each rebuild is followed by a pause as long as it
    # took: a worker spends at most half its time (and the database's) rebuilding.
    next_rebuild: float = 0.0

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

    def refresh(self, *, rebuild: bool = True) -> bool:
        """Catch the index up with the ledger's head and note when (in an app context); tell
        whether it is current. Too far behind, it is rebuilt when `rebuild` (the poll thread,
        sync mode) and left as it is otherwise (a request: the database answers it)."""
        assert self.index is not None
        began, wall = time.monotonic(), time.time()
        try:
            keys_changed = catch_up(self.index, self.rebuild_lag)
        except TooFarBehind as behind:
            # A rebuild while an import is still landing would be behind again at its next
            # batch: the database answers until it has landed, then one rebuild catches up.
            if not rebuild or time.monotonic() < self.next_rebuild or import_running():
                return False
            self.rebuild(behind.lag)
            return self.refresh(rebuild=False)
        if keys_changed or self.keys.keys is None:
            self.keys.reload()
        self.last_poll = began
        metrics.index_caught_up(self.index.seq, wall)
        return True

    def rebuild(self, lag: int) -> None:
        """Build a new index from the state tables while the old one keeps answering what it
        holds, then swap it in (one reference assignment: a read holds one index or the other).
        """
        began = time.monotonic()
        self.rebuilding = True
        try:
            index = build()
        finally:
            self.rebuilding = False
        self.index = index
        # Key events may be among those the new index was built past: read the keys again.
        self.keys.keys = None
        seconds = time.monotonic() - began
        self.next_rebuild = time.monotonic() + seconds
        log.info("index rebuilt: lag %d events, took %.1f s", lag, seconds)
        metrics.index_rebuilt(seconds)

    @property
    def last_poll(self) -> float:
        """When (monotonic) the index and the key cache were last known current: one time for
        both, since the same poll keeps both."""
        return self.keys.checked

    @last_poll.setter
    def last_poll(self, when: float) -> None:
        self.keys.mark_current(when)

    def current(self) -> bool:
        """Whether the index (and key cache) were last known current within max_lag seconds."""
        return time.monotonic() - self.last_poll <= self.max_lag

    def ensure_current(self) -> bool:
        """In poll mode, catch up here when the poll thread has fallen behind (starved, or the
        database failing): a head answer never reflects a ledger older than max_lag, and when
        the database cannot be reached this raises, so the read fails closed. False when the
        index is too far behind to catch up here (the poll thread rebuilds it): the caller
        answers from the database."""
        if self.mode != "poll" or self.index is None or self.current():
            return True
        if self.rebuilding:
            return False
        return self.refresh(rebuild=False)

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
    max_lag = float(app.config.get("CONSENT_INDEX_MAX_LAG_SECONDS", 1.0))
    follower = Follower(
        mode,
        float(app.config["CONSENT_INDEX_POLL_SECONDS"]),
        max_lag,
        keys=KeyCache(max_lag),
        rebuild_lag=int(app.config.get("CONSENT_INDEX_REBUILD_LAG", DEFAULT_REBUILD_LAG)),
    )
    app.extensions["consent_index"] = follower
    app.extensions["consent_keys"] = follower.keys
    if mode == "poll":
        # Each worker starts following at its first request of any kind (after gunicorn forks).
        app.before_request(lambda: follower.ensure_started(app))


def follower() -> Follower:
    """The current app's follower."""
    return current_app.extensions["consent_index"]  # type: ignore[no-any-return]


def catch_up(index: ConsentIndex, rebuild_lag: int | None = None) -> bool:
    """Apply every committed event after the index's seq; tell whether any concerned keys.
    With `rebuild_lag`, an index further behind than that raises TooFarBehind, unchanged.

    Serialised per index: a request thread that must follow to a seq waits for (and then
    reuses) the poll thread's catch-up rather than applying the same events beside it.
    """
    keys_changed = False
    with index.follow_lock:
        while True:
            # Asked again before each chunk: a bulk landing meanwhile is never replayed whole.
            if rebuild_lag is not None:
                lag = _head() - index.seq
                if lag > rebuild_lag:
                    raise TooFarBehind(lag)
            events = events_after(index.seq, FETCH)
            index.apply(events)
            keys_changed = keys_changed or any(e.event.kind in ev.KEY_KINDS for e in events)
            if len(events) < FETCH:
                return keys_changed


def follow(index: ConsentIndex) -> bool:
    """Catch the index up to the head unless it is too far behind for that (its rebuild is the
    poll thread's); tell whether it is at the head now."""
    try:
        catch_up(index, follower().rebuild_lag)
    except TooFarBehind:
        return False
    return True


def _head() -> int:
    with read_transaction(consistent=False):
        return int(db.session.execute(sa.select(LedgerHead.seq)).scalar_one())


def ready_index() -> ConsentIndex | None:
    """The index if it can answer now (caught up first in sync mode, rebuilt when too far
    behind), else None."""
    f = follower()
    f.ensure_started(current_app._get_current_object())  # type: ignore[attr-defined]
    if f.index is not None and f.mode == "sync":
        try:
            catch_up(f.index, f.rebuild_lag)
        except TooFarBehind as behind:
            f.rebuild(behind.lag)
            catch_up(f.index)
    return f.index


def events_after(seq: int, limit: int = FETCH) -> list[RecordedEvent]:
    """The next events after seq, oldest first (committed ones only, in commit order), typed."""
    with read_transaction(consistent=False):
        return _events_between(seq, None, limit)


def _events_between(after: int, through: int | None, limit: int) -> list[RecordedEvent]:
    """Events in (after, through], oldest first, typed; in the session's transaction."""
    query = sa.select(
        Event.seq,
        Event.at,
        Event.kind,
        Event.user_id,
        Event.purpose,
        Event.data,
        Event.actor,
        Event.ticket,
    ).where(Event.seq > after)
    if through is not None:
        query = query.where(Event.seq <= through)
    rows = db.session.execute(query.order_by(Event.seq).limit(limit)).all()
    return [RecordedEvent(r.seq, r.at, ev.from_row(r), r.actor, r.ticket) for r in rows]


def index_within(through: int) -> ConsentIndex | None:
    """This worker's index, caught up to seq `through` inside the caller's write transaction
    (which holds the ledger head, so every event up to it is committed); None when there is
    no index yet (it is being built, or reads go to the database).

    A writer that must count answers exactly as of the head it holds uses this instead of
    catch_up, whose read transaction would end the write's own. Should it apply a key event,
    the key cache is emptied so that keys are read again (see KeyCache).
    """
    f = follower()
    index = f.index
    if index is None or through - index.seq > f.rebuild_lag:
        return None
    with index.follow_lock:
        while index.seq < through:
            events = _events_between(index.seq, through, FETCH)
            if not events:
                break
            index.apply(events)
            if any(e.event.kind in ev.KEY_KINDS for e in events):
                f.keys.keys = None
    return index if index.seq == through else None
