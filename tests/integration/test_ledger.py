"""The write transaction on a real database: all-or-nothing, seq and time monotonic."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from service.domain.clock import utcnow
from service.domain.events import LedgerEvent
from service.ledger.transaction import LedgerWrite
from service.reads.consistent import head_seq
from service.runtime.extensions import db
from service.runtime.models import Event, Subject


def _counts(app: Flask) -> tuple[int, int, int]:
    with app.app_context():
        events = db.session.execute(sa.select(sa.func.count()).select_from(Event)).scalar_one()
        subjects = db.session.execute(sa.select(sa.func.count()).select_from(Subject)).scalar_one()
        head, _ = head_seq()
        db.session.rollback()
    return events, subjects, head


def test_a_write_that_fails_halfway_leaves_nothing_behind(
    app: Flask, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.purpose()
    api.purpose(key="second_purpose")
    before = _counts(app)
    real_append = LedgerWrite.append
    calls = {"n": 0}

    def failing_append(self: LedgerWrite, event: LedgerEvent, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real_append(self, event, **kwargs)

    monkeypatch.setattr(LedgerWrite, "append", failing_append)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    resp = api.call("PUT", "/v1/users/u1", role="app", json={"jurisdiction": "DE"})
    assert resp.status_code == 500
    assert "disk on fire" not in resp.get_data(as_text=True)
    assert _counts(app) == before


def test_every_answer_is_as_of_the_seq_of_the_last_event(app: Flask, api: Any) -> None:
    api.purpose()
    body = api.user("u1", jurisdiction="US")
    _, _, head = _counts(app)
    assert body["as_of"] == head
    assert api.consent("u1")["as_of"] == head


def test_event_times_never_go_backwards_even_if_the_clock_does(
    app: Flask, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    monkeypatch.setattr("service.ledger.transaction.utcnow", lambda: utcnow() - timedelta(hours=1))
    api.user("u2", jurisdiction="US")
    with app.app_context():
        times = [e.at for e in db.session.query(Event).order_by(Event.seq)]
    assert times == sorted(times)


def test_a_rejected_write_does_not_advance_the_head(app: Flask, api: Any) -> None:
    api.purpose()
    before = _counts(app)
    assert api.choose("u1", "granted", purpose="missing_purpose").status_code == 404
    assert api.choose("bad id!", "granted").status_code in (404, 422)
    assert _counts(app) == before
