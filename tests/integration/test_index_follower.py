"""Each worker's index follows the ledger from a poll thread: writes and revocations reach it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

import service.readindex.index
from service import create_app
from service.ledger import keys as api_keys
from service.readindex.build import build
from service.readindex.directory import Directory
from service.readindex.follow import Follower, catch_up
from service.runtime.extensions import db
from tests.conftest import app_config
from tests.factories import Api, bearer

WAIT_SECONDS = 15.0


def eventually(check: Callable[[], bool]) -> bool:
    """Poll check until it holds or WAIT_SECONDS pass (a bound, not a timing assertion)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


@pytest.fixture
def polled(database_url: str) -> Iterator[tuple[Flask, Api]]:
    """An app whose index follows the ledger from a background thread, as in production."""
    app = create_app(
        {**app_config(database_url), "CONSENT_INDEX": "poll", "CONSENT_INDEX_POLL_SECONDS": 0.02}
    )
    api = Api(app, app.test_client())
    try:
        yield app, api
    finally:
        follower: Follower = app.extensions["consent_index"]
        follower.stop()
        time.sleep(0.1)
        with app.app_context():
            db.engine.dispose()


def lookup(api: Api, user_id: str) -> dict[str, Any]:
    resp = api.call("GET", f"/v1/lookup/model_training/{user_id}", role="pipeline")
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def test_a_write_reaches_the_polled_index_and_as_of_stays_exact(
    polled: tuple[Flask, Api],
) -> None:
    app, api = polled
    api.purpose()
    api.user("42", jurisdiction="US")
    follower: Follower = app.extensions["consent_index"]
    assert eventually(lambda: lookup(api, "42")["basis"] == "default")
    assert eventually(lambda: follower.index is not None)
    before = lookup(api, "42")["as_of"]
    written = api.choose("42", "denied").get_json()["as_of"]
    assert eventually(lambda: lookup(api, "42")["basis"] == "choice")
    assert lookup(api, "42")["as_of"] >= written
    pinned = api.call(
        "GET", f"/v1/lookup/model_training/42?as_of={before}", role="pipeline"
    ).get_json()
    assert (pinned["state"], pinned["basis"]) == ("granted", "default")


def test_a_revoked_key_is_refused_once_the_poll_has_seen_it(polled: tuple[Flask, Api]) -> None:
    app, api = polled
    api.purpose()
    token = api.tokens["pipeline"]
    follower: Follower = app.extensions["consent_index"]
    assert eventually(lambda: follower.keys.keys is not None and len(follower.keys.keys) == 4)
    with app.app_context():
        api_keys.revoke_key("pipeline-key")
    assert eventually(
        lambda: api.client.get("/v1/purposes", headers=bearer(token)).status_code == 401
    )


def stalled(app: Flask) -> Follower:
    """Stop the app's poll thread once its index is built, as if it were starved of CPU."""
    follower: Follower = app.extensions["consent_index"]
    assert eventually(lambda: follower.index is not None and follower.keys.keys is not None)
    follower.stop()
    time.sleep(0.1)
    follower.last_poll = time.monotonic() - follower.max_lag - 1
    return follower


def test_a_head_read_catches_up_itself_when_the_poll_thread_falls_behind(
    polled: tuple[Flask, Api],
) -> None:
    app, api = polled
    api.purpose()
    api.user("42", jurisdiction="US")
    assert eventually(lambda: lookup(api, "42")["basis"] == "default")
    stalled(app)
    written = api.choose("42", "denied").get_json()["as_of"]
    # No waiting: the poll thread is gone, so the read itself must follow the ledger.
    answer = lookup(api, "42")
    assert (answer["allowed"], answer["basis"]) == (False, "choice")
    assert answer["as_of"] >= written


def test_a_lagging_index_with_its_database_gone_answers_503_never_its_old_state(
    polled: tuple[Flask, Api],
) -> None:
    app, api = polled
    api.purpose(defaults={"*": "granted"})
    api.user("42", jurisdiction="US")
    assert eventually(lambda: lookup(api, "42")["allowed"] is True)
    held = stalled(app).index.seq  # type: ignore[union-attr]

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        raise sa.exc.OperationalError(statement, {}, ConnectionError("server closed"))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", fail)
    try:
        for method, path, body in (
            ("GET", "/v1/lookup/model_training/42", None),
            ("POST", "/v1/lookup/model_training", {"user_ids": ["42"]}),
            ("GET", "/v1/snapshots/model_training?format=csv", None),
            # Even history the index holds: its key cache is as old, so no key can be checked.
            ("GET", f"/v1/lookup/model_training/42?as_of={held}", None),
        ):
            resp = api.call(method, path, role="pipeline", json=body)
            assert resp.status_code == 503, (path, resp.get_data(as_text=True)[:200])
            assert resp.headers["Retry-After"]
    finally:
        sa.event.remove(engine, "before_cursor_execute", fail)
    assert lookup(api, "42")["allowed"] is True


def test_request_threads_catching_up_beside_each_other_lose_no_subject(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compact after every few new IDs, so the racing catch-ups compact over and over.
    monkeypatch.setattr(service.readindex.index, "COMPACT_AFTER", 2)
    # ...and widen the window between a compaction's copy of the keys and its swap.
    index_keys = Directory._index_keys

    def slow_index_keys(self: Directory) -> None:
        time.sleep(random.uniform(0, 0.01))
        index_keys(self)

    monkeypatch.setattr(Directory, "_index_keys", slow_index_keys)
    api.purpose(defaults={"*": "granted"})
    with app.app_context():
        index = build()
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def follow() -> None:
        try:
            with app.app_context():
                while writing.is_set():
                    catch_up(index)
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=follow) for _ in range(4)]
    for t in threads:
        t.start()
    ids = [str(1000 + 7 * i) for i in range(80)]
    try:
        for i, uid in enumerate(ids):
            api.choose(uid, "denied" if i % 2 else "granted")
    finally:
        writing.clear()
        for t in threads:
            t.join()
    assert not errors
    with app.app_context():
        catch_up(index)
    codes = [index.code_of("model_training", index.seq, uid) for uid in ids]
    wrong = [
        uid
        for i, (uid, code) in enumerate(zip(ids, codes, strict=True))
        if code is None
        or (code.state, code.basis) != ("granted" if i % 2 == 0 else "denied", "choice")
    ]
    assert not wrong
