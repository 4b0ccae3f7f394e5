"""Per-key rate limits: over its limit a key gets 429 problem+json with Retry-After, others not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from service import create_app
from service.runtime.extensions import db
from tests.conftest import app_config
from tests.factories import Api, assert_problem, bearer, ledger_state


@pytest.fixture
def limited(database_url: str) -> Iterator[Api]:
    """An app allowing each key (or address) 3 requests a minute."""
    app = create_app({**app_config(database_url), "CONSENT_RATE_LIMIT": "3/minute"})
    yield Api(app, app.test_client())
    with app.app_context():
        db.engine.dispose()


def test_a_key_over_its_limit_gets_429_with_retry_after_and_writes_nothing(limited: Api) -> None:
    limited.purpose()
    for user in ("u1", "u2", "u3"):
        assert limited.choose(user, "granted").status_code == 200
    before = ledger_state(limited.app)
    resp = limited.choose("u4", "granted")
    problem = assert_problem(resp, 429)
    assert problem["type"].endswith(":too-many-requests")
    assert "3 per 1 minute" in problem["detail"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert ledger_state(limited.app) == before


def test_one_key_over_its_limit_does_not_hold_up_another(limited: Api) -> None:
    for _ in range(3):
        limited.call("GET", "/v1/purposes", role="pipeline")
    assert limited.call("GET", "/v1/purposes", role="pipeline").status_code == 429
    assert limited.call("GET", "/v1/purposes", role="support").status_code == 200


def test_requests_without_a_key_are_limited_by_address(limited: Api) -> None:
    statuses = [limited.client.get("/v1/purposes").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_a_flood_of_bad_keys_is_limited_per_token(limited: Api) -> None:
    headers = bearer("not-a-real-token")
    statuses = [limited.client.get("/v1/purposes", headers=headers).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_health_probes_are_never_limited(limited: Api) -> None:
    for path in ("/healthz", "/readyz"):
        assert {limited.client.get(path).status_code for _ in range(6)} == {200}


def test_limits_can_be_turned_off(database_url: str, app: Flask) -> None:
    assert "consent_limits" not in app.extensions
    api = Api(app, app.test_client())
    assert {api.call("GET", "/v1/purposes").status_code for _ in range(10)} == {200}
