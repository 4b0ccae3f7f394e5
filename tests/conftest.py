"""Fixtures: every test gets a clean database built by the real migrations, on SQLite or PostgreSQL.

Set CONSENT_TEST_DATABASE_URL to a PostgreSQL database to run the suite there; it must be one the
suite may empty (.ci/run creates and drops one). Without it the suite runs on SQLite files.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade

import service.ledger.choices
import service.ledger.transaction
from service import create_app
from service.runtime.config import normalise_database_url
from service.runtime.extensions import db
from service.runtime.readiness import MIGRATIONS_DIR

PG_URL = normalise_database_url(os.environ.get("CONSENT_TEST_DATABASE_URL", ""))
ON_POSTGRES = PG_URL.startswith("postgresql")

TABLES = (
    "idempotency_records",
    "run_remediations",
    "run_members",
    "runs",
    "overrides",
    "restrictions",
    "choices",
    "subjects",
    "notices",
    "purposes",
    "api_keys",
    "signing_keys",
)


# User tokens in tests are HS256 with this secret (tests.factories.user_token mints them).
USER_TOKEN_SECRET = "tests-user-token-secret-0123456789abcdef"


def app_config(url: str) -> dict[str, Any]:
    """The configuration every test app runs with."""
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": url,
        "CONSENT_EXPIRY_SWEEP_SECONDS": 0,
        # Reads go through the in-memory index, caught up before each read so tests are exact.
        "CONSENT_INDEX": "sync",
        # Limits have their own tests; elsewhere a fast test must not meet a 429.
        "CONSENT_RATE_LIMIT": None,
        "CONSENT_USER_RATE_LIMIT": None,
        "CONSENT_USER_TOKEN_SECRET": USER_TOKEN_SECRET,
    }


def migrate_to_head(url: str) -> None:
    """Run the real migrations against url."""
    app = create_app(app_config(url))
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR))
        db.engine.dispose()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database migrated to head once per run: a SQLite file to copy, or the PostgreSQL URL."""
    if ON_POSTGRES:
        migrate_to_head(PG_URL)
        return PG_URL
    path = tmp_path_factory.mktemp("template") / "consent.db"
    migrate_to_head(f"sqlite:///{path}")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    return str(path)


def _empty_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE events, {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("UPDATE ledger_head SET seq = 0, at = NULL"))
    engine.dispose()


def clean_database(template_db: str, directory: Path) -> str:
    """Return the URL of a clean database at head: a fresh copy, or the emptied PostgreSQL one."""
    if ON_POSTGRES:
        _empty_postgres(template_db)
        return template_db
    path = directory / f"consent-{uuid.uuid4().hex}.db"
    shutil.copyfile(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def database_url(template_db: str, tmp_path: Path) -> str:
    """A clean, migrated database for this test."""
    return clean_database(template_db, tmp_path)


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The application on this test's clean database."""
    app = create_app(app_config(database_url))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the app."""
    return app.test_client()


class Clock:
    """A settable clock standing in for the ledger's utcnow."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Control the time the ledger stamps on events (and judges idempotency records by,
    before the head lock too)."""
    c = Clock()
    monkeypatch.setattr(service.ledger.transaction, "utcnow", c)
    monkeypatch.setattr(service.ledger.choices, "utcnow", c)
    return c


postgres_only = pytest.mark.skipif(not ON_POSTGRES, reason="needs CONSENT_TEST_DATABASE_URL")


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> Any:
    """A client holding one key per role."""
    from tests.factories import Api

    return Api(app, client)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Any]:
    """A real gunicorn server (as `make run` starts it) on its own database, one key per role."""
    from tests.live import live_server

    with live_server(tmp_path) as server:
        yield server
