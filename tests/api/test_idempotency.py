"""Idempotency-Key over HTTP: a retry within the TTL replays, after it the key is free again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from tests.conftest import Clock
from tests.factories import ledger_state

TTL = timedelta(hours=24)
KEY = {"Idempotency-Key": "retry-1"}


@pytest.fixture
def ledger(api: Any, clock: Clock) -> Any:
    """A purpose, and the api on a clock the test moves."""
    api.purpose()
    return api


def test_a_retry_just_within_the_ttl_replays_the_first_answer_and_writes_nothing(
    app: Flask, ledger: Any, clock: Clock
) -> None:
    first = ledger.choose("u1", "granted", **KEY)
    before = ledger_state(app)
    clock.now += TTL - timedelta(seconds=1)
    again = ledger.choose("u1", "granted", **KEY)
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    assert ledger_state(app) == before


def test_a_retry_after_the_ttl_is_a_new_write_even_before_the_record_is_pruned(
    app: Flask, ledger: Any, clock: Clock
) -> None:
    first = ledger.choose("u1", "granted", **KEY)
    assert ledger.choose("u1", "denied").status_code == 200
    clock.now += TTL
    again = ledger.choose("u1", "granted", **KEY)
    assert again.status_code == 200
    assert again.get_json()["version"] == first.get_json()["version"] + 2
    assert ledger.consent("u1")["state"] == "granted"
    assert [e["kind"] for e in ledger.events("u1")][-3:] == ["choice_set"] * 3
    assert ledger_state(app)["idempotency_records"] == 1  # the new answer replaced the old


def test_after_the_ttl_the_key_may_be_sent_with_a_different_request(
    ledger: Any, clock: Clock
) -> None:
    ledger.choose("u1", "granted", **KEY)
    assert ledger.choose("u1", "denied", **KEY).status_code == 422  # within the TTL: refused
    clock.now += TTL + timedelta(minutes=5)
    fresh = ledger.choose("u1", "denied", **KEY)
    assert fresh.status_code == 200
    # The key now stands for the new request: its retry replays the new answer.
    clock.now += timedelta(minutes=1)
    assert ledger.choose("u1", "denied", **KEY).get_json() == fresh.get_json()
    assert ledger.choose("u1", "granted", **KEY).status_code == 422


def test_the_ttl_is_configurable(app: Flask, ledger: Any, clock: Clock) -> None:
    app.config["CONSENT_IDEMPOTENCY_TTL_HOURS"] = 0.5
    first = ledger.choose("u1", "granted", **KEY)
    clock.now += timedelta(minutes=29)
    assert ledger.choose("u1", "granted", **KEY).get_json() == first.get_json()
    clock.now += timedelta(minutes=1)
    assert ledger.choose("u1", "granted", **KEY).get_json()["version"] == 2


def test_an_override_retried_after_the_ttl_is_placed_again(ledger: Any, clock: Clock) -> None:
    body = {"purpose": "model_training", "state": "denied", "reason": "order", "ticket": "T-1"}

    def place() -> Any:
        path = "/v1/users/u1/overrides"
        return ledger.call("POST", path, role="support", json=body, headers=KEY)

    first = place()
    assert first.status_code == 201
    assert place().get_json() == first.get_json()
    lift = f"/v1/users/u1/overrides/{first.get_json()['id']}?reason=done"
    assert ledger.call("DELETE", lift, role="support").status_code == 200
    clock.now += TTL
    again = place()
    assert again.status_code == 201
    assert again.get_json()["id"] != first.get_json()["id"]
