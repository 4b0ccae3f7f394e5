"""Each worker's write cache (policies, restrictions, the next override expiry) stays exact
when other workers change the ledger: two apps on one database stand for two workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.test import TestResponse

import service.ledger.write_cache
from service import create_app
from service.runtime.extensions import db
from service.runtime.models import Event
from tests.conftest import Clock, app_config
from tests.factories import Api, bearer, ledger_state


@pytest.fixture
def other(database_url: str) -> Iterator[Flask]:
    """A second worker on the same database."""
    app = create_app(app_config(database_url))
    yield app
    with app.app_context():
        db.engine.dispose()


def choose(app: Flask, api: Api, user: str, state: str) -> TestResponse:
    """A choice written through this app (worker)."""
    return app.test_client().put(
        f"/v1/users/{user}/consents/model_training",
        json={"state": state, "source": "settings"},
        headers=bearer(api.tokens["app"]),
    )


def kinds_after(app: Flask, seq: int) -> list[tuple[str, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Event.kind, Event.user_id).where(Event.seq > seq).order_by(Event.seq)
        ).all()
        db.session.rollback()
    return [(r.kind, r.user_id) for r in rows]


def test_an_override_another_worker_placed_is_expired_by_this_workers_next_write(
    app: Flask, other: Flask, api: Api, clock: Clock
) -> None:
    api.purpose()
    assert choose(app, api, "u1", "granted").status_code == 200  # this worker knows no expiry
    expires = (clock.now + timedelta(minutes=1)).isoformat()
    placed = other.test_client().post(
        "/v1/users/u2/overrides",
        json={
            "purpose": "model_training",
            "state": "denied",
            "reason": "complaint",
            "ticket": "T-1",
            "expires_at": expires,
        },
        headers=bearer(api.tokens["support"]),
    )
    assert placed.status_code == 201, placed.get_json()
    head = ledger_state(app)["head"]
    clock.now += timedelta(minutes=2)  # this worker's next write learns of it when it is due
    answer = choose(app, api, "u3", "granted")
    assert answer.status_code == 200
    assert kinds_after(app, head) == [
        ("override_expired", "u2"),
        ("subject_registered", "u3"),
        ("choice_set", "u3"),
    ]


def test_a_policy_another_worker_changed_is_what_this_workers_next_write_resolves_with(
    app: Flask, other: Flask, api: Api
) -> None:
    api.purpose(defaults={"*": "granted"})
    assert choose(app, api, "u1", "granted").status_code == 200
    changed = other.test_client().patch(
        "/v1/purposes/model_training",
        json={"defaults": {"*": "denied"}},
        headers=bearer(api.tokens["admin"]),
    )
    assert changed.status_code == 200, changed.get_json()
    assert choose(app, api, "u2", "granted").status_code == 200
    [registered] = [e for e in api.events("u2") if e["kind"] == "subject_registered"]
    assert (registered["before"], registered["after"]) == ("denied", "denied")


def test_a_restriction_another_worker_placed_decides_this_workers_next_answer(
    app: Flask, other: Flask, api: Api
) -> None:
    api.purpose()
    assert choose(app, api, "u1", "granted").get_json()["basis"] == "choice"
    order = {
        "authority": "Court",
        "instrument": "Order 1",
        "purposes": ["model_training"],
        "jurisdictions": ["*"],
        "window": None,
        "reason": "injunction",
        "ticket": "LEG-1",
    }
    placed = other.test_client().post(
        "/v1/restrictions", json=order, headers=bearer(api.tokens["admin"])
    )
    assert placed.status_code == 201, placed.get_json()
    answer = choose(app, api, "u1", "denied").get_json()
    assert (answer["basis"], answer["restriction_id"]) == ("restriction", placed.get_json()["id"])


def test_a_worker_far_behind_reloads_what_it_knows_instead_of_reading_every_event(
    app: Flask, other: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.ledger.write_cache, "SCAN_LIMIT", 3)
    api.purpose(defaults={"*": "granted"})
    assert choose(app, api, "u1", "granted").status_code == 200
    client = other.test_client()
    changed = client.patch(
        "/v1/purposes/model_training",
        json={"defaults": {"*": "denied"}},
        headers=bearer(api.tokens["admin"]),
    )
    assert changed.status_code == 200
    for i in range(5):  # more events than the limit after the policy change
        assert choose(other, api, f"x{i}", "granted").status_code == 200
    assert choose(app, api, "u2", "granted").status_code == 200
    [registered] = [e for e in api.events("u2") if e["kind"] == "subject_registered"]
    assert registered["after"] == "denied"


def test_the_cache_is_caught_up_to_the_head_each_write_holds(app: Flask, api: Any) -> None:
    api.purpose()
    answer = choose(app, api, "u1", "granted").get_json()
    facts = app.extensions["consent_write_cache"].facts
    # Caught up under the lock, before the write's own events (seq as_of - 1 for a new user's
    # registration, as_of for its choice: the lock was taken at as_of - 2).
    assert facts.seq == answer["as_of"] - 2
    assert set(facts.policies) == {"model_training"}
