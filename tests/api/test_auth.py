"""Bearer keys: 401 without a valid one, 403 for a wrong role, hashes at rest, actors on events."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.domain.errors import ValidationFailed
from service.ledger import keys as api_keys
from service.runtime import models
from service.runtime.extensions import db
from tests.factories import assert_problem, bearer, ledger_state, make_key

ROLES = ("app", "pipeline", "support", "admin")
EVERYONE = frozenset(ROLES)
ADMIN = frozenset({"admin"})
APP = frozenset({"app", "admin"})
READERS = frozenset({"app", "support", "admin"})
SUPPORT = frozenset({"support", "admin"})
OVERRIDE = {"purpose": "model_training", "state": "granted", "reason": "complaint", "ticket": "T-1"}

# Every endpoint with a body that succeeds on the `world` fixture's data, its success status, and
# the roles DESIGN.md lets call it. Each test gets a fresh database, so writes do not interfere.
ENDPOINTS: list[tuple[str, str, Any, int, frozenset[str]]] = [
    ("GET", "/v1/purposes", None, 200, EVERYONE),
    ("GET", "/v1/purposes/model_training", None, 200, EVERYONE),
    (
        "POST",
        "/v1/purposes",
        {"key": "analytics", "title": "Analytics", "defaults": {"*": "denied"}},
        201,
        ADMIN,
    ),
    ("PATCH", "/v1/purposes/model_training", {"title": "Training"}, 200, ADMIN),
    ("PUT", "/v1/users/u1", {"jurisdiction": "FR"}, 200, APP),
    ("DELETE", "/v1/users/u1", None, 200, APP),
    ("GET", "/v1/users/u1", None, 200, READERS),
    ("GET", "/v1/users/u1/consents", None, 200, READERS),
    ("GET", "/v1/users/u1/consents/model_training", None, 200, READERS),
    ("GET", "/v1/users/u1/events", None, 200, READERS),
    ("PUT", "/v1/users/u1/consents/model_training", {"state": "denied"}, 200, APP),
    ("GET", "/v1/users/u1/overrides", None, 200, SUPPORT),
    ("POST", "/v1/users/u2/overrides", OVERRIDE, 201, SUPPORT),
    ("DELETE", "/v1/users/u1/overrides/{override_id}?reason=resolved", None, 200, SUPPORT),
]
MATRIX = [
    (method, path, body, status, role, role in allowed)
    for method, path, body, status, allowed in ENDPOINTS
    for role in ROLES
]
MATRIX_IDS = [
    f"{m} {p.split('?')[0]} as {r} {'allowed' if ok else 'refused'}" for m, p, _, _, r, ok in MATRIX
]


@pytest.fixture
def world(api: Any) -> dict[str, Any]:
    """A purpose and a user with a choice and an active override."""
    api.purpose()
    api.user("u1", jurisdiction="DE")
    assert api.choose("u1", "granted").status_code == 200
    placed = api.override("u1", "denied")
    assert placed.status_code == 201
    return {"override_id": placed.get_json()["id"]}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "role", "allowed"), MATRIX, ids=MATRIX_IDS
)
def test_each_role_may_call_exactly_the_endpoints_the_design_gives_it(
    api: Any,
    world: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    status: int,
    role: str,
    allowed: bool,
) -> None:
    before = ledger_state(api.app)
    resp = api.call(method, path.format(**world), role=role, json=body)
    if allowed:
        assert resp.status_code == status, resp.get_json()
        return
    problem = assert_problem(resp, 403)
    assert f"'{role}'" in problem["detail"]
    assert ledger_state(api.app) == before


def test_the_role_matrix_covers_every_role_the_service_knows() -> None:
    assert sorted(ROLES) == sorted(models.ROLES)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/u1",
        "/v1/users/u1/consents",
        "/v1/users/u1/consents/model_training",
        "/v1/users/u1/events",
        "/v1/users/u1/overrides",
        "/v1/users/ghost",
        "/v1/users/ghost/events",
        "/v1/users/bad%20id!",
    ],
)
def test_a_pipeline_may_not_read_users_nor_learn_whether_they_exist(
    api: Any, world: dict[str, Any], path: str
) -> None:
    resp = api.call("GET", path, role="pipeline")
    problem = assert_problem(resp, 403)
    assert "u1" not in problem["detail"]
    assert "ghost" not in problem["detail"]


# --- 401 -----------------------------------------------------------------------------------------

ENDPOINTS_401 = [
    ("GET", "/v1/purposes", None),
    ("POST", "/v1/purposes", {"key": "analytics", "title": "A", "defaults": {"*": "denied"}}),
    ("GET", "/v1/users/u1/consents/model_training", None),
    ("PUT", "/v1/users/u1/consents/model_training", {"state": "granted"}),
    ("DELETE", "/v1/users/u1", None),
    ("POST", "/v1/users/u1/overrides", OVERRIDE),
]
BAD_AUTHORIZATION = {
    "a non-Bearer scheme": "Basic YWRtaW46YWRtaW4=",
    "the token under another scheme": "Token {admin}",
    "a bare token with no scheme": "{admin}",
    "an empty token": "Bearer ",
    "the scheme alone": "Bearer",
    "an unknown token": "Bearer cl_" + "A" * 43,
    "a token with a typo": "Bearer {admin}x",
    "the token's hash": "Bearer {admin_hash}",
    "an empty header": "",
}


def _assert_unauthorized(resp: TestResponse) -> None:
    assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS_401, ids=lambda x: str(x)[:40])
def test_a_request_without_an_authorization_header_is_a_401_with_a_bearer_challenge(
    api: Any, world: dict[str, Any], method: str, path: str, body: Any
) -> None:
    before = ledger_state(api.app)
    _assert_unauthorized(api.client.open(path, method=method, json=body))
    assert ledger_state(api.app) == before


@pytest.mark.parametrize("header", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS_401, ids=lambda x: str(x)[:40])
def test_a_request_with_a_bad_authorization_header_is_a_401_with_a_bearer_challenge(
    api: Any, world: dict[str, Any], header: str, method: str, path: str, body: Any
) -> None:
    token = api.tokens["admin"]
    value = header.format(admin=token, admin_hash=api_keys.hash_token(token))
    before = ledger_state(api.app)
    resp = api.client.open(path, method=method, json=body, headers={"Authorization": value})
    _assert_unauthorized(resp)
    assert ledger_state(api.app) == before


def test_a_revoked_key_is_refused_on_the_very_next_request(api: Any, world: dict[str, Any]) -> None:
    token = make_key(api.app, role="app", name="settings-backend")
    path = "/v1/users/u1/consents/model_training"
    assert api.client.get(path, headers=bearer(token)).status_code == 200
    with api.app.app_context():
        api_keys.revoke_key("settings-backend")
    _assert_unauthorized(api.client.get(path, headers=bearer(token)))
    before = ledger_state(api.app)
    resp = api.client.put(path, json={"state": "denied"}, headers=bearer(token))
    _assert_unauthorized(resp)
    assert ledger_state(api.app) == before
    assert api.call("GET", path, role="app").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("PUT", "/v1/users/u1", {"data": '{"jurisdiction": ', "content_type": "application/json"}),
        ("PUT", "/v1/users/u1", {"json": {"jurisdiction": "XX", "extra": 1}}),
        ("PUT", "/v1/users/bad%20id!", {"json": {"jurisdiction": "DE"}}),
        ("POST", "/v1/purposes", {"json": {"key": "Bad Key"}}),
        ("POST", "/v1/purposes", {"json": [1, 2, 3]}),
        ("PUT", "/v1/users/u1/consents/model_training", {"json": {"state": "maybe"}}),
        (
            "PUT",
            "/v1/users/u1/consents/model_training",
            {"json": {"state": "granted"}, "headers": {"If-Match": "nonsense"}},
        ),
        ("POST", "/v1/users/u1/overrides", {"json": {}}),
        ("DELETE", "/v1/users/u1/overrides/1", {}),
        ("GET", "/v1/users/u1/events?limit=-5", {}),
        ("PUT", "/v1/users/u1", {"data": '{"a": 1}', "content_type": "text/plain"}),
        ("PUT", "/v1/users/u1", {"json": {"jurisdiction": "x" * (2 * 1024 * 1024)}}),
    ],
    ids=lambda x: str(x)[:50],
)
def test_a_missing_key_is_a_401_before_the_request_is_validated(
    client: FlaskClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    _assert_unauthorized(client.open(path, method=method, **kwargs))


# --- keys at rest and on events ------------------------------------------------------------------


def _rows(app: Flask, table: str) -> list[dict[str, Any]]:
    with app.app_context(), db.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]


def test_a_key_is_stored_only_as_a_hash_of_its_token(app: Flask) -> None:
    with app.app_context():
        doc, token = api_keys.create_key("pipeline-nightly", "pipeline")
    assert token.startswith(api_keys.TOKEN_PREFIX)
    assert len(token) > 40
    assert "token" not in doc
    assert "token_hash" not in doc
    keys = _rows(app, "api_keys")
    assert len(keys) == 1
    assert all(token not in str(value) for value in keys[0].values())
    assert all(token[len(api_keys.TOKEN_PREFIX) :] not in str(v) for v in keys[0].values())
    assert keys[0]["token_hash"] == api_keys.hash_token(token)
    events = _rows(app, "events")
    assert [e["kind"] for e in events] == ["key_created"]
    assert all(token not in str(value) for e in events for value in e.values())
    with app.app_context():
        assert all(token not in str(k) for k in api_keys.list_keys())


def test_two_keys_never_share_a_token(app: Flask) -> None:
    tokens = {make_key(app, role="app", name=f"app-{n}") for n in range(20)}
    assert len(tokens) == 20


def test_a_key_whose_role_is_unknown_cannot_be_created(app: Flask) -> None:
    with app.app_context(), pytest.raises(ValidationFailed):
        api_keys.create_key("root", "superuser")
    assert _rows(app, "api_keys") == []


def test_events_record_the_name_and_role_of_the_key_that_caused_them(api: Any) -> None:
    app_token = make_key(api.app, role="app", name="settings-backend")
    staff_token = make_key(api.app, role="support", name="alice@support")
    admin_token = make_key(api.app, role="admin", name="ops-admin")
    assert (
        api.client.post(
            "/v1/purposes",
            json={"key": "model_training", "title": "T", "defaults": {"*": "granted"}},
            headers=bearer(admin_token),
        ).status_code
        == 201
    )
    path = "/v1/users/u1/consents/model_training"
    assert (
        api.client.put(path, json={"state": "denied"}, headers=bearer(app_token)).status_code == 200
    )
    placed = api.client.post(
        "/v1/users/u1/overrides",
        json={**OVERRIDE, "reason": "regulator request", "ticket": "REG-9"},
        headers=bearer(staff_token),
    )
    assert placed.status_code == 201
    assert api.client.delete("/v1/users/u1", headers=bearer(admin_token)).status_code == 200

    actors = [(e["kind"], e["actor"], e["role"]) for e in api.events("u1")]
    assert actors == [
        ("subject_registered", "settings-backend", "app"),
        ("choice_set", "settings-backend", "app"),
        ("override_placed", "alice@support", "support"),
        ("subject_erased", "ops-admin", "admin"),
    ]
    assert placed.get_json()["placed_by"] == "alice@support"
    purpose_events = [e for e in _rows(api.app, "events") if e["kind"] == "purpose_created"]
    assert [(e["actor"], e["role"]) for e in purpose_events] == [("ops-admin", "admin")]
