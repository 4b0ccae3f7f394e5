"""Sixteen writers at once on PostgreSQL: every write's event exactly once, in seq and commit order.

16 writers × CONSENT_TEST_WRITES_PER_WRITER writes (250 by default, to keep the suite's time;
issue 15 asks for 1,000: set the variable) over a small pool of users, so that group commit
meets both fresh users and users written twice in one batch.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from service import create_app
from service.runtime.extensions import db
from service.runtime.models import Choice, Event, LedgerHead
from tests.conftest import app_config, postgres_only
from tests.factories import bearer

WRITERS = 16
WRITES_PER_WRITER = int(os.environ.get("CONSENT_TEST_WRITES_PER_WRITER", "250"))
USERS = 40


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The application with a pool for 16 writers in one process (a request may hold two
    connections: its session's and the key check's). Served, each gunicorn worker has 4
    threads, which the default pool of 5 + 10 covers; here a writer waiting 30 s for a
    connection on a slow machine would fail the test for the harness, not the ledger."""
    options = {"pool_pre_ping": True, "pool_size": 2 * WRITERS, "max_overflow": WRITERS}
    app = create_app({**app_config(database_url), "SQLALCHEMY_ENGINE_OPTIONS": options})
    yield app
    with app.app_context():
        db.engine.dispose()


@postgres_only
def test_sixteen_writers_leave_every_event_once_gap_free_in_commit_order_and_replayable(
    app: Flask, api: Any
) -> None:
    api.purpose()
    token = api.tokens["app"]
    with app.app_context():
        start = int(db.session.execute(sa.select(LedgerHead.seq)).scalar_one())
        db.session.rollback()
    barrier = threading.Barrier(WRITERS)

    def writer(i: int) -> list[tuple[int, str, int, str]]:
        client = app.test_client()
        answered = []
        barrier.wait()
        for j in range(WRITES_PER_WRITER):
            user = f"storm{(i * 7 + j) % USERS}"
            state = "granted" if (i + j) % 2 else "denied"
            resp = client.put(
                f"/v1/users/{user}/consents/model_training",
                json={"state": state, "source": "settings"},
                headers=bearer(token),
            )
            assert resp.status_code == 200, resp.get_json()
            body = resp.get_json()
            answered.append((body["as_of"], user, body["version"], state))
        return answered

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        answers = [a for batch in pool.map(writer, range(WRITERS)) for a in batch]

    with app.app_context():
        events = db.session.execute(
            sa.select(Event.seq, Event.kind, Event.user_id, Event.before, Event.after, Event.data)
            .where(Event.seq > start)
            .order_by(Event.seq)
        ).all()
        head = int(db.session.execute(sa.select(LedgerHead.seq)).scalar_one())
        rows = {
            c.user_id: (c.state, c.version)
            for c in db.session.execute(sa.select(Choice)).scalars()
            if c.user_id.startswith("storm")
        }
        db.session.rollback()

    # Gap-free, and the head is the last of them.
    assert [e.seq for e in events] == list(range(start + 1, head + 1))
    choice_events = {e.seq: e for e in events if e.kind == "choice_set"}
    assert len(choice_events) == WRITERS * WRITES_PER_WRITER
    # Every answer's event is there exactly once, at the seq the answer named.
    assert len({seq for seq, *_ in answers}) == len(answers)
    for seq, user, version, state in answers:
        event = choice_events[seq]
        assert (event.user_id, event.data["version"], event.data["state"]) == (
            user,
            version,
            state,
        )
    # Commit order: per user, versions follow seqs one by one, and each event starts from the
    # state the one before it ended in; replaying them gives the stored state.
    replay: dict[str, tuple[str, int]] = {}
    last_after: dict[str, str | None] = defaultdict(lambda: None)
    for e in events:
        if e.kind != "choice_set":
            continue
        previous = replay.get(e.user_id)
        assert e.data["version"] == (previous[1] if previous else 0) + 1
        assert e.data["previous"] == (previous[0] if previous else None)
        if last_after[e.user_id] is not None:
            assert e.before == last_after[e.user_id]
        last_after[e.user_id] = e.after
        replay[e.user_id] = (e.data["state"], e.data["version"])
    assert replay == rows
    for user, (state, version) in replay.items():
        decision = api.consent(user)
        assert (decision["state"], decision["version"]) == (state, version)
