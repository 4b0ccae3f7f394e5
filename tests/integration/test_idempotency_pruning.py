"""Pruning idempotency records past the TTL: in bounded batches, by the sweeper or the CLI,
never touching an event."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from service.ledger import idempotency, sweeper
from service.runtime.cli import cli
from service.runtime.extensions import db
from service.runtime.models import IdempotencyRecord
from tests.conftest import Clock
from tests.factories import Api, ledger_state

TTL = timedelta(hours=24)
OLD = 25
RECENT = 5


def stored_keys(app: Flask) -> set[str]:
    """The Idempotency-Keys that still have a stored answer."""
    with app.app_context():
        keys = set(db.session.execute(sa.select(IdempotencyRecord.idempotency_key)).scalars())
        db.session.rollback()
    return keys


@pytest.fixture
def records(app: Flask, client: FlaskClient, clock: Clock) -> datetime:
    """OLD answers stored 30 hours ago, RECENT ones 10 hours ago; returns the earlier time."""
    # Set back before any write: event times never go backwards, and records take their time.
    start = clock.now = clock.now - timedelta(hours=30)
    api = Api(app, client)
    api.purpose()
    for i in range(OLD):
        assert api.choose(f"u{i}", "granted", **{"Idempotency-Key": f"old-{i}"}).status_code == 200
    clock.now = start + timedelta(hours=20)
    for i in range(RECENT):
        assert api.choose(f"r{i}", "denied", **{"Idempotency-Key": f"new-{i}"}).status_code == 200
    return start


def test_prune_deletes_exactly_the_records_past_the_ttl(app: Flask, records: datetime) -> None:
    with app.app_context():
        assert idempotency.prune(records + TTL - timedelta(seconds=1)) == 0
        assert idempotency.prune(records + TTL) == OLD
        assert idempotency.prune(records + TTL) == 0
    assert stored_keys(app) == {f"new-{i}" for i in range(RECENT)}


def test_prune_works_in_batches_and_stops_after_max_batches(app: Flask, records: datetime) -> None:
    now = records + TTL + timedelta(hours=1)
    with app.app_context():
        assert idempotency.prune(now, batch_size=10, max_batches=2) == 20
        assert len(stored_keys(app)) == OLD + RECENT - 20
        assert idempotency.prune(now, batch_size=10) == OLD - 20
    assert stored_keys(app) == {f"new-{i}" for i in range(RECENT)}


def test_pruning_deletes_no_event_and_moves_no_seq(app: Flask, records: datetime) -> None:
    before = ledger_state(app)
    with app.app_context():
        assert idempotency.prune(records + 2 * TTL) == OLD + RECENT
    after = ledger_state(app)
    assert after["idempotency_records"] == 0
    assert {k: v for k, v in after.items() if k != "idempotency_records"} == {
        k: v for k, v in before.items() if k != "idempotency_records"
    }


def test_a_sweeper_tick_prunes_the_records_past_the_ttl(app: Flask, records: datetime) -> None:
    # The records were stored 30 and 10 hours before the real time the sweeper uses.
    sweeper.sweep(app)
    assert stored_keys(app) == {f"new-{i}" for i in range(RECENT)}


def test_a_failing_prune_is_logged_and_the_sweeper_goes_on(
    app: Flask, records: datetime, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(**_: Any) -> int:
        raise sa.exc.OperationalError("DELETE", {}, Exception("database away"))

    monkeypatch.setattr(idempotency, "prune", broken)
    sweeper.sweep(app)
    assert "sweep failed: idempotency records pruned" in caplog.text
    assert len(stored_keys(app)) == OLD + RECENT


def test_consent_idempotency_prune_reports_how_many_it_deleted(
    app: Flask, records: datetime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_DATABASE_URL", database_url)
    monkeypatch.setenv("CONSENT_EXPIRY_SWEEP_SECONDS", "0")
    # 30 and 10 hours ago: a TTL of 12 hours leaves only the recent ones.
    monkeypatch.setenv("CONSENT_IDEMPOTENCY_TTL_HOURS", "12")
    run = CliRunner().invoke(cli, ["idempotency", "prune", "--batch-size", "7"])
    assert run.exit_code == 0, run.output
    assert run.stdout.strip() == f"Pruned {OLD} idempotency records older than 12 hours."
    assert stored_keys(app) == {f"new-{i}" for i in range(RECENT)}


@pytest.mark.parametrize("batch_size", ["0", "-3", "many"])
def test_a_bad_batch_size_is_a_usage_error(
    database_url: str, monkeypatch: pytest.MonkeyPatch, batch_size: str
) -> None:
    monkeypatch.setenv("CONSENT_DATABASE_URL", database_url)
    run = CliRunner().invoke(cli, ["idempotency", "prune", "--batch-size", batch_size])
    assert run.exit_code == 2
    assert "--batch-size" in run.stderr
