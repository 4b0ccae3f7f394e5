"""A user's runs read their writes: a run another worker recorded after this worker's index last
polled is listed at once, and an earlier as_of still leaves it out."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from service import create_app
from service.readindex.follow import Follower
from service.runtime.extensions import db
from tests.api.test_runs import put_members, register
from tests.conftest import app_config
from tests.factories import Api
from tests.integration.test_index_follower import eventually


def idle_app(database_url: str) -> Flask:
    """A worker whose index, once built, does not poll again within the test."""
    return create_app(
        {
            **app_config(database_url),
            "CONSENT_INDEX": "poll",
            "CONSENT_INDEX_POLL_SECONDS": 3600,
            "CONSENT_INDEX_MAX_LAG_SECONDS": 3600,
        }
    )


@pytest.fixture
def workers(database_url: str) -> Iterator[tuple[Api, Api]]:
    """Two workers on one ledger: the first writes, the second reads."""
    apps = [idle_app(database_url), idle_app(database_url)]
    writer = Api(apps[0], apps[0].test_client())
    reader = copy.copy(writer)  # the same keys, sent to the other worker
    reader.app, reader.client = apps[1], apps[1].test_client()
    try:
        yield writer, reader
    finally:
        for app in apps:
            follower: Follower = app.extensions["consent_index"]
            follower.stop()
        time.sleep(0.1)
        for app in apps:
            with app.app_context():
                db.engine.dispose()


def test_a_run_another_worker_recorded_after_the_last_poll_is_in_the_users_runs_at_once(
    workers: tuple[Api, Api],
) -> None:
    writer, reader = workers
    writer.purpose()
    writer.user("7", jurisdiction="US")
    listed = reader.call("GET", "/v1/users/7/runs", role="support").get_json()
    assert listed["runs"] == []
    follower: Follower = reader.app.extensions["consent_index"]
    assert eventually(lambda: follower.index is not None)
    built = follower.index.seq if follower.index is not None else 0

    run = register(writer, "after-the-poll")
    assert put_members(writer, run["id"], ["7"]).status_code == 201
    assert follower.index is not None
    assert follower.index.seq == built  # it has not polled
    body = reader.call("GET", "/v1/users/7/runs", role="support").get_json()
    assert [r["name"] for r in body["runs"]] == ["after-the-poll"]
    assert body["as_of"] > built
    assert body["runs"][0]["affected"] is False
    # Pinned to a seq before the recording, the run is not there: as_of stays exact.
    pinned = reader.call("GET", f"/v1/users/7/runs?as_of={built}", role="support").get_json()
    assert pinned["runs"] == []
