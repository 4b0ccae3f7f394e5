"""Each worker's index follows the ledger from a poll thread: writes and revocations reach it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from service import auth, create_app
from service.decisions import Follower
from service.extensions import db
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
    assert eventually(lambda: follower.keys is not None and len(follower.keys) == 4)
    with app.app_context():
        auth.revoke_key("pipeline-key")
    assert eventually(
        lambda: api.client.get("/v1/purposes", headers=bearer(token)).status_code == 401
    )
