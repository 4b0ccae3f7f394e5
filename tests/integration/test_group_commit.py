"""Group commit on a real database: writes that queue while the head lock is held elsewhere
commit as one batch, each answered as itself; a refused write fails alone; a database failure
fails the whole batch with nothing written."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import exc as sa_exc
from werkzeug.test import TestResponse

import service.ledger.choice_batch
from service.ledger.group_commit import GroupCommitter
from service.runtime.extensions import db
from service.runtime.models import Event
from tests.conftest import ON_POSTGRES, postgres_only
from tests.factories import assert_problem, bearer, ledger_state

WRITES = 6
USERS = [f"g{i}" for i in range(WRITES)]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


@contextmanager
def head_lock_held(app: Flask) -> Iterator[Callable[[], None]]:
    """Hold the ledger head's lock from another connection, as another worker's write would;
    the function yielded releases it."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    released = threading.Event()
    if ON_POSTGRES:
        engine = sa.create_engine(url)
        conn = engine.connect()
        conn.execute(sa.text("UPDATE ledger_head SET seq = seq WHERE id = 1"))

        def release() -> None:
            if not released.is_set():
                released.set()
                conn.rollback()

        try:
            yield release
        finally:
            release()
            conn.close()
            engine.dispose()
    else:
        lite = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")

        def release() -> None:
            if not released.is_set():
                released.set()
                lite.execute("ROLLBACK")

        try:
            yield release
        finally:
            release()
            lite.close()


def committer_of(app: Flask) -> GroupCommitter[Any, Any] | None:
    found: GroupCommitter[Any, Any] | None = app.extensions.get("consent_choice_committer")
    return found


def queue_holds(app: Flask, length: int) -> Callable[[], bool]:
    """Whether the app's group committer has this many writes waiting."""

    def holds() -> bool:
        committer = committer_of(app)
        return committer is not None and committer.queued() == length

    return holds


@contextmanager
def queued_writes(
    app: Flask, token: str, writes: list[tuple[str, str, dict[str, str]]]
) -> Iterator[list[Future[TestResponse]]]:
    """Send the writes from threads of their own while the head lock is held elsewhere; once
    every one of them waits in the worker's queue, yield their futures (the lock still held:
    leaving the block releases it)."""
    with head_lock_held(app) as release, ThreadPoolExecutor(len(writes)) as pool:

        def put(user: str, state: str, headers: dict[str, str]) -> TestResponse:
            return app.test_client().put(
                f"/v1/users/{user}/consents/model_training",
                json={"state": state, "source": "settings"},
                headers=bearer(token, **headers),
            )

        futures = []
        for user, state, headers in writes:
            futures.append(pool.submit(put, user, state, headers))
            wait_until(queue_holds(app, len(futures)), f"{len(futures)} writes wait in the queue")
        yield futures
        release()


def choice_events(app: Flask, after: int) -> list[Any]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Event.seq, Event.at, Event.kind, Event.user_id, Event.data)
            .where(Event.seq > after)
            .order_by(Event.seq)
        ).all()
        db.session.rollback()
    return list(rows)


@pytest.fixture
def registered(api: Any) -> Any:
    """A purpose and the users the writes are for, each with a choice already."""
    api.purpose()
    for user in USERS:
        assert api.choose(user, "granted").status_code == 200
    return api


def test_writes_queued_behind_the_head_lock_commit_as_one_batch_each_answered_as_itself(
    app: Flask, registered: Any
) -> None:
    before = ledger_state(app)["head"]
    states = ["denied" if i % 2 else "granted" for i in range(WRITES)]
    with queued_writes(
        app, registered.tokens["app"], [(u, s, {}) for u, s in zip(USERS, states, strict=True)]
    ) as futures:
        pass
    answers = [f.result(30) for f in futures]
    assert [a.status_code for a in answers] == [200] * WRITES
    events = choice_events(app, before)
    # One transaction: consecutive seqs from the head before, one time for all of them.
    assert [e.seq for e in events] == list(range(before + 1, before + 1 + WRITES))
    assert len({e.at for e in events}) == 1
    assert [e.kind for e in events] == ["choice_set"] * WRITES
    by_seq = {e.seq: e for e in events}
    for user, state, answer in zip(USERS, states, answers, strict=True):
        body = answer.get_json()
        event = by_seq[body["as_of"]]
        assert (body["user_id"], body["state"], body["version"]) == (user, state, 2)
        assert (event.user_id, event.data["state"], event.data["version"]) == (user, state, 2)
        assert answer.headers["ETag"] == '"2"'
    # The leader's write (the first queued) took the first seq.
    assert answers[0].get_json()["as_of"] == before + 1


def test_a_write_refused_in_a_batch_fails_alone_and_the_others_commit(
    app: Flask, registered: Any
) -> None:
    before = ledger_state(app)["head"]
    writes: list[tuple[str, str, dict[str, str]]] = [(u, "denied", {}) for u in USERS]
    writes[2] = (USERS[2], "denied", {"If-Match": '"7"'})  # the record is at version 1
    with queued_writes(app, registered.tokens["app"], writes) as futures:
        pass
    answers = [f.result(30) for f in futures]
    assert [a.status_code for a in answers] == [200, 200, 412, 200, 200, 200]
    assert "version 1" in assert_problem(answers[2], 412)["detail"]
    events = choice_events(app, before)
    assert [e.seq for e in events] == list(range(before + 1, before + WRITES))
    assert sorted(e.user_id for e in events) == sorted(USERS[:2] + USERS[3:])
    assert registered.consent(USERS[2])["version"] == 1


def fail_reading_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's read of the users' facts fails as a lost database would."""

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise sa_exc.OperationalError("SELECT …", None, ConnectionError("server closed"))

    monkeypatch.setattr(service.ledger.choice_batch, "load_users_facts", lost)


def test_a_database_failure_in_a_batch_answers_every_write_503_and_writes_nothing(
    app: Flask, registered: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ledger_state(app)
    with queued_writes(app, registered.tokens["app"], [(u, "denied", {}) for u in USERS]) as fs:
        fail_reading_users(monkeypatch)
    answers = [f.result(30) for f in fs]
    for answer in answers:
        assert_problem(answer, 503)
        assert answer.headers["Retry-After"]
    assert ledger_state(app) == before
    monkeypatch.undo()
    assert registered.choose(USERS[0], "denied").status_code == 200  # and the next one works


@postgres_only
def test_the_leaders_connection_cut_while_it_waits_for_the_lock_fails_its_batch_whole(
    app: Flask, registered: Any
) -> None:
    before = ledger_state(app)
    with queued_writes(app, registered.tokens["app"], [(u, "denied", {}) for u in USERS]) as fs:
        with app.app_context():
            terminated = db.session.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE ledger_head%'"
                )
            ).all()
            db.session.rollback()
        assert terminated == [(True,)]
    answers = [f.result(30) for f in fs]
    for answer in answers:
        assert_problem(answer, 503)
    assert ledger_state(app) == before
    assert registered.choose(USERS[0], "denied").status_code == 200
