"""Liveness and readiness probes, and 503 (never 500) when the database is not there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import downgrade, upgrade
from werkzeug.test import TestResponse

from service import create_app
from service.runtime.extensions import db
from service.runtime.readiness import MIGRATIONS_DIR
from service.web.problems import PROBLEM_MEDIA_TYPE
from tests.conftest import app_config
from tests.factories import bearer

UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nope"


def standalone_app(url: str) -> Iterator[Flask]:
    """An app on a database of the test's own choosing, its engine disposed afterwards."""
    app = create_app(app_config(url))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def unmigrated_app(tmp_path: Path) -> Iterator[Flask]:
    """The app on a fresh SQLite file that no migration has touched."""
    yield from standalone_app(f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.fixture
def unreachable_app() -> Iterator[Flask]:
    """The app on a PostgreSQL address that refuses connections."""
    yield from standalone_app(UNREACHABLE_URL)


def assert_unavailable(resp: TestResponse) -> None:
    """A 503 problem+json that tells the client when to retry."""
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.mimetype == PROBLEM_MEDIA_TYPE
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.get_json(force=True)
    assert body["status"] == 503
    assert body["type"].endswith("unavailable")


def test_healthz_answers_200_without_a_key(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "checks": {}}


def test_readyz_answers_200_when_the_database_is_reachable_and_at_head(
    client: FlaskClient,
) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok"}}


def test_readyz_answers_503_on_a_database_never_migrated(unmigrated_app: Flask) -> None:
    resp = unmigrated_app.test_client().get("/readyz")
    assert_unavailable(resp)
    assert "migrations: at nothing" in resp.get_json(force=True)["detail"]


@pytest.mark.parametrize("drop_version_table", [False, True], ids=["at-base", "no-version-table"])
def test_readyz_answers_503_when_the_schema_is_not_at_head(
    app: Flask, client: FlaskClient, drop_version_table: bool
) -> None:
    with app.app_context():
        try:
            downgrade(directory=str(MIGRATIONS_DIR), revision="base")
            if drop_version_table:
                with db.engine.begin() as conn:
                    conn.execute(sa.text("DROP TABLE alembic_version"))
            resp = client.get("/readyz")
        finally:
            # Other tests share this database on PostgreSQL: always leave it at head.
            upgrade(directory=str(MIGRATIONS_DIR), revision="head")
    assert_unavailable(resp)
    detail = resp.get_json(force=True)["detail"]
    assert "migrations: at nothing" in detail
    assert "database" not in detail
    assert client.get("/readyz").status_code == 200


def test_healthz_still_answers_200_when_the_database_is_unreachable(
    unreachable_app: Flask,
) -> None:
    assert unreachable_app.test_client().get("/healthz").status_code == 200


def test_readyz_answers_503_when_the_database_is_unreachable(unreachable_app: Flask) -> None:
    resp = unreachable_app.test_client().get("/readyz")
    assert_unavailable(resp)
    assert "database: unreachable" in resp.get_json(force=True)["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/purposes", None),
        ("GET", "/v1/users/u1/consents/model_training", None),
        ("PUT", "/v1/users/u1/consents/model_training", {"state": "granted"}),
    ],
)
def test_authenticated_endpoints_answer_503_when_the_database_is_unreachable(
    unreachable_app: Flask, method: str, path: str, body: dict[str, str] | None
) -> None:
    resp = unreachable_app.test_client().open(
        path, method=method, json=body, headers=bearer("cl_any-token")
    )
    assert_unavailable(resp)
