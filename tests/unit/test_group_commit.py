"""Unit tests for group commit's hand-over between requests (service.ledger.group_commit),
with a stand-in for the transaction: who leads, what each batch takes, who gets what."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.ledger.group_commit import BatchFailed, GroupCommitter


class Ledger:
    """A stand-in transaction: the first batch waits at its lock until released; each batch
    answers every write with (batch number, position in it, the write)."""

    def __init__(self, *, fail_batch: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.locked = threading.Event()  # a leader waits at the lock
        self.release = threading.Event()
        self.fail_batch = fail_batch

    def commit(self, take: Callable[[], Sequence[str]]) -> list[tuple[int, int, str]]:
        if not self.batches:
            self.locked.set()
            assert self.release.wait(10)
        writes = list(take())
        number = len(self.batches)
        self.batches.append(writes)
        if number == self.fail_batch:
            raise ConnectionError("the database went away")
        return [(number, i, w) for i, w in enumerate(writes)]


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def wait_for_queue(committer: GroupCommitter[str, tuple[int, int, str]], length: int) -> None:
    wait_until(lambda: committer.queued() == length)


def test_writes_queued_while_the_leader_waits_for_the_lock_commit_in_its_batch() -> None:
    ledger = Ledger()
    committer: GroupCommitter[str, tuple[int, int, str]] = GroupCommitter(ledger.commit)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(committer.submit, "w0")
        assert ledger.locked.wait(10)
        rest = [pool.submit(committer.submit, f"w{i}") for i in range(1, 6)]
        wait_for_queue(committer, 6)
        ledger.release.set()
        answers = [first.result(10), *(f.result(10) for f in rest)]
    # One batch, the leader's own write first, each request answered with its own write.
    assert len(ledger.batches) == 1
    assert ledger.batches[0][0] == "w0"
    assert sorted(ledger.batches[0]) == [f"w{i}" for i in range(6)]
    assert [a[2] for a in answers] == [f"w{i}" for i in range(6)]
    assert {a[0] for a in answers} == {0}
    assert sorted(a[1] for a in answers) == list(range(6))


def test_a_batch_takes_at_most_its_limit_and_the_lead_passes_to_the_first_left_waiting() -> None:
    ledger = Ledger()
    committer: GroupCommitter[str, tuple[int, int, str]] = GroupCommitter(
        ledger.commit, max_batch=2
    )
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(committer.submit, "w0")
        assert ledger.locked.wait(10)
        rest = []
        for i in range(1, 5):  # queued in this order
            rest.append(pool.submit(committer.submit, f"w{i}"))
            wait_for_queue(committer, i + 1)
        ledger.release.set()
        answers = [first.result(10), *(f.result(10) for f in rest)]
    assert ledger.batches == [["w0", "w1"], ["w2", "w3"], ["w4"]]
    assert [(a[0], a[1]) for a in answers] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert committer.queued() == 0


def test_a_failed_batch_fails_every_write_in_it_and_the_next_batch_still_commits() -> None:
    ledger = Ledger(fail_batch=0)
    committer: GroupCommitter[str, tuple[int, int, str]] = GroupCommitter(
        ledger.commit, max_batch=3
    )
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(committer.submit, "w0")]
        assert ledger.locked.wait(10)
        for i in range(1, 4):
            futures.append(pool.submit(committer.submit, f"w{i}"))
            wait_for_queue(committer, i + 1)
        ledger.release.set()
        failures = []
        for future in futures[:3]:
            with pytest.raises(BatchFailed) as raised:
                future.result(10)
            failures.append(raised.value)
        last = futures[3].result(10)
    # Each request gets its own exception, each caused by the batch's failure.
    assert len({id(f) for f in failures}) == 3
    assert all(isinstance(f.__cause__, ConnectionError) for f in failures)
    assert ledger.batches == [["w0", "w1", "w2"], ["w3"]]
    assert last == (1, 0, "w3")


def test_a_write_alone_leads_its_own_batch_at_once() -> None:
    ledger = Ledger()
    ledger.release.set()
    committer: GroupCommitter[str, tuple[int, int, str]] = GroupCommitter(ledger.commit)
    assert committer.submit("only") == (0, 0, "only")
    assert committer.submit("next") == (1, 0, "next")
    assert committer.queued() == 0
