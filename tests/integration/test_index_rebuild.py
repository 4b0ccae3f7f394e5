"""An index far behind the head (a bulk import landed) is rebuilt beside the old one, not
replayed event by event; meanwhile no head read is answered from the old state."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service import create_app
from service.ledger import import_source, imports
from service.readindex.follow import Follower
from service.runtime.extensions import db
from tests.conftest import app_config, postgres_only
from tests.factories import Api
from tests.integration.test_index_follower import eventually, lookup

LAG = 30


def rebuilds(api: Api) -> float:
    """consent_index_rebuilds_total as /metrics shows it (0 before the first)."""
    text = api.client.get("/metrics").get_data(as_text=True)
    found = re.search(r"^consent_index_rebuilds_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def bulk(app: Flask, directory: Path, count: int, prefix: str = "b") -> list[str]:
    """Import `count` US subjects who chose denied; their IDs."""
    ids = [f"{prefix}{i}" for i in range(count)]
    path = directory / f"{prefix}.csv"
    path.write_text(
        "user_id,jurisdiction,choice:model_training\n" + "".join(f"{u},US,denied\n" for u in ids)
    )
    with app.app_context():
        imports.import_file(import_source.Source.open(path), directory / f"{prefix}.json", "t")
    return ids


@pytest.fixture
def polled(database_url: str) -> Iterator[tuple[Flask, Api]]:
    """A polled index rebuilt past a lag of LAG events, as a server runs it."""
    app = create_app(
        {
            **app_config(database_url),
            "CONSENT_INDEX": "poll",
            "CONSENT_INDEX_POLL_SECONDS": 0.02,
            "CONSENT_INDEX_REBUILD_LAG": LAG,
        }
    )
    api = Api(app, app.test_client())
    try:
        yield app, api
    finally:
        app.extensions["consent_index"].stop()
        time.sleep(0.1)
        with app.app_context():
            db.engine.dispose()


def started(app: Flask, api: Api) -> Follower:
    api.purpose()  # granted by default in the US
    api.user("old", jurisdiction="US")
    follower: Follower = app.extensions["consent_index"]
    assert eventually(lambda: lookup(api, "old")["basis"] == "default")
    assert eventually(lambda: follower.index is not None and follower.current())
    return follower


def test_an_index_far_behind_is_rebuilt_and_counted_not_replayed(
    polled: tuple[Flask, Api], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.readindex.follow")
    app, api = polled
    follower = started(app, api)
    first, counted = follower.index, rebuilds(api)
    assert first is not None
    # Held, the poll thread asks for the lag only once the whole import has landed (a catch-up
    # already under way when it lands may take up to one fetch of it; never more).
    with first.follow_lock:
        ids = bulk(app, tmp_path, 40)  # 80 events
    assert eventually(lambda: follower.index is not first and follower.current())
    assert follower.index is not None
    assert follower.index.built_seq >= first.seq + 2 * len(ids)
    assert eventually(lambda: rebuilds(api) == counted + 1)
    assert any(re.match(r"index rebuilt: lag [0-9]+ events, took", m) for m in caplog.messages)
    for user_id in (*ids, "old"):
        answer = lookup(api, user_id)
        assert (answer["allowed"], answer["basis"]) == (
            user_id == "old",
            "default" if user_id == "old" else "choice",
        )


@postgres_only
def test_while_an_import_is_running_no_worker_rebuilds_and_once_it_ends_each_does(
    polled: tuple[Flask, Api], tmp_path: Path
) -> None:
    app, api = polled
    follower = started(app, api)
    first = follower.index
    assert first is not None
    with app.app_context(), imports.announced():
        assert imports.import_running()
        with first.follow_lock:
            ids = bulk(app, tmp_path, 40)
        # Many polls, each finding the index far behind; past the max lag the head is the
        # database's.
        time.sleep(follower.max_lag + 0.2)
        assert follower.index is first
        assert lookup(api, ids[0])["basis"] == "choice"
    with app.app_context():
        assert not imports.import_running()
    assert eventually(lambda: follower.index is not first and follower.current())


def test_a_lag_under_the_threshold_is_caught_up_in_the_same_index(
    polled: tuple[Flask, Api], tmp_path: Path
) -> None:
    app, api = polled
    follower = started(app, api)
    first, counted = follower.index, rebuilds(api)
    ids = bulk(app, tmp_path, 10)  # 20 events
    assert eventually(lambda: lookup(api, ids[-1])["basis"] == "choice")
    assert follower.index is first
    assert rebuilds(api) == counted


def test_until_the_rebuild_head_reads_are_the_databases_never_the_old_index(
    polled: tuple[Flask, Api], tmp_path: Path
) -> None:
    app, api = polled
    follower = started(app, api)
    follower.stop()  # the poll thread, which would rebuild, is starved from here on
    time.sleep(0.1)
    old = follower.index
    assert old is not None
    held = old.seq
    ids = bulk(app, tmp_path, 40)
    follower.last_poll = time.monotonic() - follower.max_lag - 1
    answer = lookup(api, ids[0])
    assert (answer["allowed"], answer["basis"]) == (False, "choice")
    assert answer["as_of"] >= held + 80
    batch = api.call(
        "POST", "/v1/lookup/model_training", role="pipeline", json={"user_ids": ids + ["old"]}
    ).get_json()
    assert (sorted(batch["denied"]), batch["allowed"]) == (sorted(ids), ["old"])
    # The old index still answers what it holds (an as_of of its own seq), and a request never
    # replays the bulk into it.
    pinned = lookup_as_of(api, ids[0], held)
    assert (pinned["state"], pinned["basis"]) == ("denied", "unknown")
    assert follower.index is old
    assert old.seq == held
    with app.app_context():
        assert follower.refresh()  # what the poll thread does next: rebuild, then catch up
    assert follower.index is not old
    assert lookup(api, ids[-1])["basis"] == "choice"


def test_after_a_rebuild_the_next_waits_as_long_as_it_took(
    polled: tuple[Flask, Api], tmp_path: Path
) -> None:
    app, api = polled
    follower = started(app, api)
    follower.stop()
    time.sleep(0.1)
    bulk(app, tmp_path, 40, "first")
    with app.app_context():
        assert follower.refresh()
    rebuilt = follower.index
    assert follower.next_rebuild > time.monotonic() - 0.5
    follower.next_rebuild = time.monotonic() + 3600  # as if that rebuild had taken an hour
    bulk(app, tmp_path, 40, "second")
    with app.app_context():
        assert not follower.refresh()
    assert follower.index is rebuilt


def lookup_as_of(api: Api, user_id: str, seq: int) -> dict[str, Any]:
    resp = api.call("GET", f"/v1/lookup/model_training/{user_id}?as_of={seq}", role="pipeline")
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def test_in_sync_mode_a_read_rebuilds_an_index_far_behind_itself(
    database_url: str, tmp_path: Path
) -> None:
    app = create_app({**app_config(database_url), "CONSENT_INDEX_REBUILD_LAG": LAG})
    api = Api(app, app.test_client())
    api.purpose()
    api.user("old", jurisdiction="US")
    assert lookup(api, "old")["basis"] == "default"
    first = app.extensions["consent_index"].index
    ids = bulk(app, tmp_path, 40)
    assert lookup(api, ids[7])["basis"] == "choice"
    assert app.extensions["consent_index"].index is not first
    with app.app_context():
        db.engine.dispose()


def test_a_build_reading_its_tables_in_many_small_ranges_loses_and_repeats_no_row(
    app: Flask, api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.readindex.build

    monkeypatch.setattr(service.readindex.build, "PG_PAGE_SPAN", 1)
    monkeypatch.setattr(service.readindex.build, "SQLITE_SPAN", 7)
    api.purpose()
    ids = bulk(app, tmp_path, 700)
    with app.app_context():
        index = service.readindex.build.build()
        db.session.rollback()
    assert index.n_rows == len(ids)
    codes = [index.code_of("model_training", index.seq, u) for u in ids]
    assert all(c is not None and (c.state, c.basis) == ("denied", "choice") for c in codes)
