"""Group commit: a worker's concurrent writes share one head lock, one transaction, one commit.

Throughput of the ledger's writes is one over the time the head lock is held, and most of that
time is round trips and the commit's fsync, the same for one write as for ten. So the first
request to arrive leads: it takes the head lock, then every write queued by then (its own
first), commits them together and hands each request its own outcome. Requests arriving
meanwhile queue; when the leader is done, the first of them leads the next batch, which has
filled while this one held (or waited for) the lock. Seqs go to the writes in the order taken.

A write refused on its own (a 412, say) is an outcome like an answer; a failure of the batch
itself (the database) fails every write in it, with nothing written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

W = TypeVar("W")
R = TypeVar("R")

MAX_BATCH = 64


class BatchFailed(Exception):
    """The batch a write was in failed as a whole; the cause says why (a database error,
    answered as 503, or a bug, answered as 500). Each request gets its own instance."""


class _Pending(Generic[W, R]):
    """One queued write and what its request waits for: its outcome, or its turn to lead."""

    __slots__ = ("write", "ready", "lead", "outcome", "failure")

    def __init__(self, write: W) -> None:
        self.write = write
        self.ready = threading.Event()
        self.lead = False
        self.outcome: R | None = None
        self.failure: BaseException | None = None


class GroupCommitter(Generic[W, R]):
    """Commits writes in batches through `commit`, which is called with a `take` function: it
    must take the head lock first, then call `take` for the writes of its batch, and return
    one outcome per write, in order."""

    def __init__(
        self,
        commit: Callable[[Callable[[], Sequence[W]]], Sequence[R]],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: list[_Pending[W, R]] = []
        self._leading = False  # while True a leader will take what is queued

    def queued(self) -> int:
        """How many writes wait in the queue (a leader's own write included until it takes
        its batch)."""
        with self._mutex:
            return len(self._queue)

    def submit(self, write: W) -> R:
        """Commit `write` (with whatever else is queued) and return its outcome; raise
        BatchFailed if its batch failed."""
        pending: _Pending[W, R] = _Pending(write)
        with self._mutex:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        if not lead:
            pending.ready.wait()
            lead = pending.lead
        if lead:
            self._lead()
        if pending.failure is not None:
            raise BatchFailed(str(pending.failure)) from pending.failure
        assert pending.outcome is not None
        return pending.outcome

    def _take(self, taken: list[_Pending[W, R]]) -> list[W]:
        with self._mutex:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        taken.extend(batch)
        return [p.write for p in batch]

    def _lead(self) -> None:
        """Commit one batch (this request's write is first in the queue), hand out the
        outcomes, then pass the lead to the first write still queued."""
        taken: list[_Pending[W, R]] = []
        try:
            outcomes = self._commit(lambda: self._take(taken))
            if len(outcomes) != len(taken):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(taken)} writes")
        except BaseException as failure:
            if not taken:
                self._take(taken)
            for p in taken:
                p.failure = failure
        else:
            for p, outcome in zip(taken, outcomes, strict=True):
                p.outcome = outcome
        finally:
            with self._mutex:
                if self._queue:
                    self._queue[0].lead = True
                    self._queue[0].ready.set()
                else:
                    self._leading = False
            for p in taken:
                p.ready.set()
