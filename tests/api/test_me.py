"""/v1/me: the user's own record through a user token; never another user's, never with a key."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from service import create_app
from service.ledger import self_service
from service.runtime.extensions import db
from service.runtime.models import Notice, Restriction
from tests.conftest import USER_TOKEN_SECRET, app_config
from tests.factories import (
    Api,
    assert_problem,
    bearer,
    ledger_state,
    user_token,
)

ROLES = ("app", "pipeline", "support", "admin")
ALLOWED_ORIGIN = "https://app.example.com"
# Every /v1/me operation, with a body that succeeds.
ME_OPERATIONS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/me", None),
    ("GET", "/v1/me/consents/model_training", None),
    ("PUT", "/v1/me/consents/model_training", {"state": "granted"}),
    ("GET", "/v1/me/events", None),
    ("GET", "/v1/me/runs", None),
]


@pytest.fixture
def world(api: Api) -> Api:
    """Two purposes (one honouring GPC) and two users in the EEA with the app."""
    api.purpose()
    resp = api.call(
        "POST",
        "/v1/purposes",
        json={
            "key": "ads",
            "title": "Personalised ads",
            "description": "Ads chosen from what you post.",
            "defaults": {"*": "granted"},
            "honours_gpc": True,
        },
    )
    assert resp.status_code == 201, resp.get_json()
    api.user("alice", jurisdiction="DE")
    api.user("bob", jurisdiction="FR")
    return api


def me(api: Api, method: str, path: str, user: str = "alice", **kwargs: Any) -> Any:
    """A request as the user, with a fresh token for them."""
    headers = bearer(user_token(user), **kwargs.pop("headers", {}))
    return api.client.open(path, method=method, headers=headers, **kwargs)


def consent_of(document: dict[str, Any], purpose: str) -> dict[str, Any]:
    [found] = [c for c in document["consents"] if c["purpose"] == purpose]
    return dict(found)


# --- reading and writing one's own record --------------------------------------------------------


def test_a_user_reads_every_purpose_with_its_title_and_the_reason_in_plain_words(
    world: Api,
) -> None:
    resp = me(world, "GET", "/v1/me")
    assert resp.status_code == 200, resp.get_json()
    doc = resp.get_json()
    assert (doc["user_id"], doc["jurisdiction"], doc["erased"]) == ("alice", "DE", False)
    assert doc["gpc_recorded"] == []
    training = consent_of(doc, "model_training")
    assert training["title"] == "Model Training"
    assert (training["allowed"], training["basis"], training["default_selector"]) == (
        False,
        "default",
        "EEA",
    )
    assert training["explanation"] == {
        "code": "default_region",
        "params": {"region": "EEA"},
        "text": "Off — the default in your region (EEA)",
    }
    assert {"legal_basis", "notice", "version", "as_of"} <= set(training)
    ads = consent_of(doc, "ads")
    assert (ads["description"], ads["honours_gpc"]) == ("Ads chosen from what you post.", True)
    assert ads["explanation"]["text"] == "On — the default"


def test_the_app_and_the_user_see_the_same_decisions(world: Api) -> None:
    world.override("alice", "granted")
    app_view = world.call("GET", "/v1/users/alice", role="support").get_json()
    own = me(world, "GET", "/v1/me").get_json()
    keys = ("purpose", "allowed", "state", "basis", "version", "as_of", "override")
    assert [{k: c[k] for k in keys} for c in own["consents"]] == [
        {k: c[k] for k in keys} for c in app_view["consents"]
    ]
    assert consent_of(own, "model_training")["explanation"]["text"] == (
        "On — set by our support team"
    )


def test_a_user_never_seen_reads_what_a_pipeline_would_be_told_and_nothing_is_written(
    world: Api,
) -> None:
    before = ledger_state(world.app)
    doc = me(world, "GET", "/v1/me", user="newcomer").get_json()
    assert (doc["user_id"], doc["jurisdiction"], doc["erased"]) == ("newcomer", None, False)
    assert {c["basis"] for c in doc["consents"]} == {"unknown"}
    events = me(world, "GET", "/v1/me/events", user="newcomer").get_json()
    assert (events["events"], events["has_more"]) == ([], False)
    assert me(world, "GET", "/v1/me/runs", user="newcomer").get_json()["runs"] == []
    assert ledger_state(world.app) == before


def test_a_user_sets_their_own_choice_recorded_as_themselves(world: Api) -> None:
    resp = me(world, "PUT", "/v1/me/consents/model_training", json={"state": "granted"})
    assert resp.status_code == 200, resp.get_json()
    decision = resp.get_json()
    assert (decision["allowed"], decision["basis"], decision["source"]) == (
        True,
        "choice",
        "self_service",
    )
    assert resp.headers["ETag"] == '"1"'
    last = world.events("alice")[-1]
    assert (last["kind"], last["actor"], last["role"]) == ("choice_set", "user:alice", "user")
    assert (last["before"], last["after"], last["data"]["source"]) == (
        "denied",
        "granted",
        "self_service",
    )
    assert world.consent("alice")["allowed"] is True
    one = me(world, "GET", "/v1/me/consents/model_training")
    assert one.headers["ETag"] == '"1"'
    assert one.get_json()["explanation"]["text"] == "On — you turned it on"


def test_a_users_choice_carries_the_notice_version_they_were_shown(world: Api) -> None:
    with world.app.app_context():
        # Published as PUT /v1/purposes/ads/notice would publish it (issue 13's notices).
        db.session.add(
            Notice(
                purpose="ads",
                version="2026-01",
                text="We use your posts to choose ads.",
                published_seq=1,
                published_at=datetime.now(UTC),
                published_by="admin-key",
            )
        )
        db.session.commit()
    body = {"state": "denied", "notice_version": "2026-01"}
    assert me(world, "PUT", "/v1/me/consents/ads", json=body).status_code == 200
    assert world.events("alice")[-1]["data"]["notice_version"] == "2026-01"


def test_a_user_never_seen_who_chooses_is_registered_as_the_app_would_register_them(
    world: Api,
) -> None:
    resp = me(world, "PUT", "/v1/me/consents/ads", user="carol", json={"state": "denied"})
    assert resp.status_code == 200, resp.get_json()
    kinds = [(e["kind"], e["actor"]) for e in world.events("carol")]
    assert kinds == [
        ("subject_registered", "user:carol"),
        ("subject_registered", "user:carol"),
        ("choice_set", "user:carol"),
    ]
    assert world.consent("carol", "ads")["basis"] == "choice"


def test_a_users_history_and_runs_are_what_the_app_and_support_see(world: Api) -> None:
    assert world.choose("alice", "granted").status_code == 200
    own = me(world, "GET", "/v1/me/events?limit=2").get_json()
    theirs = world.call("GET", "/v1/users/alice/events?limit=2", role="app").get_json()
    assert own == theirs
    assert own["has_more"] is True
    head = world.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"]
    run = world.call(
        "POST",
        "/v1/runs",
        role="pipeline",
        json={"name": "run-1", "purpose": "model_training", "as_of": head, "model": "m1"},
    ).get_json()
    uploaded = world.call(
        "PUT",
        f"/v1/runs/{run['id']}/members",
        role="pipeline",
        data=b"alice\nbob\n",
        headers={"Content-Type": "text/plain"},
    )
    assert uploaded.status_code == 201, uploaded.get_json()
    runs = me(world, "GET", "/v1/me/runs").get_json()
    assert [(r["name"], r["model"], r["affected"]) for r in runs["runs"]] == [
        ("run-1", "m1", False)
    ]
    assert runs == world.call("GET", "/v1/users/alice/runs", role="support").get_json()


def test_a_restrictions_explanation_names_the_authority_whose_order_it_is(
    world: Api,
) -> None:
    with world.app.app_context():
        order = Restriction(
            authority="Data Protection Commission",
            instrument="Decision 2026/1",
            purposes=["model_training"],
            jurisdictions=["EEA"],
            reason="order",
            ticket="LEG-1",
            placed_by="admin-key",
            placed_seq=1,
            placed_at=datetime.now(UTC),
        )
        db.session.add(order)
        db.session.commit()
        names = self_service.restriction_authorities([order.id, None, "x"])
        decision = {"purpose": "model_training", "basis": "restriction", "allowed": False}
        shown = self_service.consent_document(
            {**decision, "restriction_id": order.id}, {"title": "T"}, names[order.id]
        )
    assert shown["explanation"]["text"] == (
        "Off — an order by Data Protection Commission restricts this"
    )


# --- whose record: only one's own ----------------------------------------------------------------


def test_a_token_for_one_user_never_reads_or_writes_another(world: Api) -> None:
    def bobs_consents() -> list[dict[str, Any]]:
        doc = world.call("GET", "/v1/users/bob", role="support").get_json()
        return [{k: v for k, v in c.items() if k != "as_of"} for c in doc["consents"]]

    bob_before = bobs_consents()
    bob_events = world.events("bob")
    for method, path, body in ME_OPERATIONS:
        resp = me(world, method, path, user="alice", json=body)
        assert resp.status_code == 200, (path, resp.get_json())
        text = resp.get_data(as_text=True)
        assert '"bob"' not in text
    assert bobs_consents() == bob_before
    assert world.events("bob") == bob_events
    # Nothing in the API lets a token name its user: no /v1/me path has a user parameter.
    me_rules = [r for r in world.app.url_map.iter_rules() if r.rule.startswith("/v1/me")]
    assert me_rules
    assert all("user_id" not in r.arguments for r in me_rules)
    assert me(world, "GET", "/v1/me/alice").status_code == 404
    assert me(world, "GET", "/v1/me?user_id=bob").get_json()["user_id"] == "alice"


def _sample_path(rule: Any) -> str:
    """A concrete path for a route, its parameters filled with values that exist."""
    values = {
        "user_id": "bob",
        "purpose": "model_training",
        "key": "model_training",
        "run_id": "1",
        "override_id": "1",
        "restriction_id": "1",
        "version": "v1",
    }
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: values.get(m.group(1), "x"), rule.rule)


# Routes that authenticate nothing at all: probes, the spec, static files, the JWKS. A token there
# reaches no user's data, so they ignore it like any other header.
PUBLIC_ENDPOINTS = frozenset(
    {
        "static",
        "api-docs.openapi_json",
        "health.Healthz",
        "health.Readyz",
        "health.Metrics",
        "signing.Jwks",
    }
)


def _api_routes(app: Flask) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if (
            rule.endpoint in PUBLIC_ENDPOINTS
            or rule.rule.startswith(("/v1/me", "/console", "/me/"))
            or rule.rule == "/me"
            or rule.methods is None
        ):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, _sample_path(rule)))
    return routes


def test_a_user_token_is_refused_on_every_api_route_outside_v1_me(world: Api) -> None:
    routes = _api_routes(world.app)
    assert len(routes) >= 25
    before = ledger_state(world.app)
    token = user_token("bob")
    for method, path in routes:
        resp = world.client.open(path, method=method, headers=bearer(token), json={})
        problem = assert_problem(resp, 403)
        assert "user token reaches only /v1/me" in problem["detail"], (method, path)
    for method, path in routes:
        invalid = jwt.encode({"sub": "bob"}, USER_TOKEN_SECRET, algorithm="HS256")
        assert_problem(world.client.open(path, method=method, headers=bearer(invalid)), 401)
    assert ledger_state(world.app) == before


def test_a_user_token_does_not_open_the_console(world: Api) -> None:
    resp = world.client.get("/console/users/bob", headers=bearer(user_token("bob")))
    assert resp.status_code == 302
    assert "/console/sign-in" in resp.headers["Location"]
    signed_in = world.client.post(
        "/console/sign-in", data={"token": user_token("bob")}, follow_redirects=False
    )
    assert signed_in.status_code in (200, 400)


@pytest.mark.parametrize("role", ROLES)
def test_an_api_key_is_refused_on_every_v1_me_route(world: Api, role: str) -> None:
    before = ledger_state(world.app)
    for method, path, body in ME_OPERATIONS:
        resp = world.call(method, path, role=role, json=body)
        problem = assert_problem(resp, 403)
        assert "never to an API key" in problem["detail"]
    assert ledger_state(world.app) == before


@pytest.mark.parametrize(
    ("authorization", "phrase"),
    [
        (None, "Send a user token"),
        ("Basic YWxpY2U6cHc=", "must be 'Bearer <token>'"),
        ("Bearer cl_unknown", "not valid or has been revoked"),
        ("Bearer a.b.c", "not a well-formed JWT"),
        ("Bearer {expired}", "expired"),
    ],
    ids=["none", "basic", "unknown key", "junk token", "expired token"],
)
def test_a_request_without_a_valid_user_token_is_a_401(
    world: Api, authorization: str | None, phrase: str
) -> None:
    now = int(datetime.now(UTC).timestamp())
    expired = jwt.encode(
        {"sub": "alice", "aud": "consent-ledger", "iat": now - 900, "exp": now - 60, "jti": "j"},
        USER_TOKEN_SECRET,
        algorithm="HS256",
    )
    headers = (
        {} if authorization is None else {"Authorization": authorization.format(expired=expired)}
    )
    before = ledger_state(world.app)
    for method, path, body in ME_OPERATIONS:
        resp = world.client.open(path, method=method, headers=headers, json=body)
        problem = assert_problem(resp, 401)
        assert phrase in problem["detail"]
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert ledger_state(world.app) == before


def test_without_any_key_configured_user_tokens_are_off(database_url: str) -> None:
    config = {**app_config(database_url), "CONSENT_USER_TOKEN_SECRET": None}
    app = create_app(config)
    try:
        resp = app.test_client().get("/v1/me", headers=bearer(user_token("alice")))
        problem = assert_problem(resp, 401)
        assert problem["type"].endswith(":user-tokens-off")
        assert "CONSENT_USER_TOKEN_JWKS or CONSENT_USER_TOKEN_SECRET" in problem["detail"]
    finally:
        with app.app_context():
            db.engine.dispose()


# --- erased users --------------------------------------------------------------------------------


def test_an_erased_user_reads_their_record_and_history_but_cannot_change_anything(
    world: Api,
) -> None:
    assert world.call("DELETE", "/v1/users/alice", role="app").status_code == 200
    before = ledger_state(world.app)
    doc = me(world, "GET", "/v1/me", headers={"Sec-GPC": "1"})
    assert doc.status_code == 200
    assert doc.get_json()["erased"] is True
    assert {c["explanation"]["text"] for c in doc.get_json()["consents"]} == {
        "Off — your account was deleted"
    }
    assert "Consent-GPC-Recorded" not in doc.headers
    kinds = [e["kind"] for e in me(world, "GET", "/v1/me/events").get_json()["events"]]
    assert "subject_erased" in kinds
    assert me(world, "GET", "/v1/me/runs").status_code == 200
    for purpose in ("model_training", "ads"):
        resp = me(world, "PUT", f"/v1/me/consents/{purpose}", json={"state": "granted"})
        assert "erased" in assert_problem(resp, 409)["detail"]
    assert ledger_state(world.app) == before


# --- the app API's write rules: Idempotency-Key and If-Match --------------------------------------


def test_a_retry_with_the_same_idempotency_key_answers_the_first_answer_and_writes_nothing(
    world: Api,
) -> None:
    token = user_token("alice")
    headers = bearer(token, **{"Idempotency-Key": "k-1"})
    put = "/v1/me/consents/model_training"
    first = world.client.put(put, json={"state": "granted"}, headers=headers)
    assert first.status_code == 200
    after_first = ledger_state(world.app)
    again = world.client.put(put, json={"state": "granted"}, headers=headers)
    assert (again.status_code, again.get_json(), again.headers["ETag"]) == (
        200,
        first.get_json(),
        first.headers["ETag"],
    )
    assert ledger_state(world.app) == after_first
    other = world.client.put(put, json={"state": "denied"}, headers=headers)
    assert "Idempotency-Key" in assert_problem(other, 422)["errors"]
    # A new token of the same user is the same user: the key is theirs, not the token's.
    fresh = bearer(user_token("alice"), **{"Idempotency-Key": "k-1"})
    assert world.client.put(put, json={"state": "granted"}, headers=fresh).get_json() == (
        first.get_json()
    )
    # Another user's (or the app's) same key is theirs alone.
    bob = bearer(user_token("bob"), **{"Idempotency-Key": "k-1"})
    assert (
        world.client.put(put, json={"state": "granted"}, headers=bob).get_json()["user_id"] == "bob"
    )
    assert world.choose("alice", "denied", **{"Idempotency-Key": "k-1"}).status_code == 200
    assert ledger_state(world.app) != after_first


def test_if_match_lets_a_write_through_only_on_the_current_version(world: Api) -> None:
    put = "/v1/me/consents/model_training"
    stale = me(world, "PUT", put, json={"state": "granted"}, headers={"If-Match": '"3"'})
    assert "version 0" in assert_problem(stale, 412)["detail"]
    fresh = me(world, "PUT", put, json={"state": "granted"}, headers={"If-Match": '"0"'})
    assert fresh.headers["ETag"] == '"1"'
    before = ledger_state(world.app)
    again = me(world, "PUT", put, json={"state": "denied"}, headers={"If-Match": '"0"'})
    assert_problem(again, 412)
    assert_problem(me(world, "PUT", put, json={"state": "denied"}, headers={"If-Match": "3"}), 400)
    assert ledger_state(world.app) == before
    anyway = me(world, "PUT", put, json={"state": "denied"}, headers={"If-Match": "*"})
    assert anyway.headers["ETag"] == '"2"'


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/me/consents/model_training", {"state": "maybe"}, 422),
        ("/v1/me/consents/model_training", {"state": "granted", "source": "api"}, 422),
        ("/v1/me/consents/model_training", {}, 422),
        ("/v1/me/consents/model_training", {"state": "granted", "notice_version": ""}, 422),
        ("/v1/me/consents/nothing_here", {"state": "granted"}, 404),
        ("/v1/me/consents/Bad-Key", {"state": "granted"}, 422),
    ],
)
def test_every_bad_write_is_a_precise_problem_that_changes_nothing(
    world: Api, path: str, body: dict[str, Any], status: int
) -> None:
    before = ledger_state(world.app)
    assert_problem(me(world, "PUT", path, json=body, headers={"Sec-GPC": "1"}), status)
    assert ledger_state(world.app) == before


# --- Global Privacy Control ----------------------------------------------------------------------


def test_gpc_records_denied_once_for_each_honouring_purpose_without_a_choice(world: Api) -> None:
    resp = me(world, "GET", "/v1/me", headers={"Sec-GPC": "1"})
    assert resp.headers["Consent-GPC-Recorded"] == "ads"
    doc = resp.get_json()
    assert doc["gpc_recorded"] == ["ads"]
    ads = consent_of(doc, "ads")
    assert (ads["allowed"], ads["source"]) == (False, "gpc")
    assert ads["explanation"]["code"] == "gpc"
    assert consent_of(doc, "model_training")["basis"] == "default"  # does not honour GPC
    last = world.events("alice")[-1]
    assert (last["kind"], last["purpose"], last["actor"], last["role"]) == (
        "choice_set",
        "ads",
        "user:alice",
        "user",
    )
    assert (last["before"], last["after"], last["data"]["source"]) == ("granted", "denied", "gpc")
    before = ledger_state(world.app)
    again = me(world, "GET", "/v1/me", headers={"Sec-GPC": "1"})
    assert "Consent-GPC-Recorded" not in again.headers
    assert again.get_json()["gpc_recorded"] == []
    assert ledger_state(world.app) == before


def test_gpc_never_replaces_a_choice_of_the_users_own(world: Api) -> None:
    assert world.choose("alice", "granted", purpose="ads").status_code == 200
    before = ledger_state(world.app)
    for _method, path, _ in ME_OPERATIONS:
        if _method == "GET":
            assert (
                "Consent-GPC-Recorded"
                not in me(world, "GET", path, headers={"Sec-GPC": "1"}).headers
            )
    assert ledger_state(world.app) == before
    assert world.consent("alice", "ads")["source"] == "settings"


def test_gpc_is_honoured_after_a_successful_write_and_not_after_a_refused_one(
    world: Api,
) -> None:
    put = "/v1/me/consents/model_training"
    before = ledger_state(world.app)
    refused = me(
        world, "PUT", put, json={"state": "granted"}, headers={"Sec-GPC": "1", "If-Match": '"9"'}
    )
    assert_problem(refused, 412)
    assert ledger_state(world.app) == before
    done = me(world, "PUT", put, json={"state": "granted"}, headers={"Sec-GPC": "1"})
    assert done.status_code == 200
    assert done.headers["Consent-GPC-Recorded"] == "ads"
    assert done.get_json()["purpose"] == "model_training"
    assert world.consent("alice", "ads")["source"] == "gpc"
    # A write to the honouring purpose itself is the user's own choice, not GPC's.
    mine = me(
        world,
        "PUT",
        "/v1/me/consents/ads",
        user="bob",
        json={"state": "granted"},
        headers={"Sec-GPC": "1"},
    )
    assert "Consent-GPC-Recorded" not in mine.headers
    assert world.consent("bob", "ads")["source"] == "self_service"


@pytest.mark.parametrize("value", ["0", "true", "", "1, 1"])
def test_only_sec_gpc_1_is_the_signal(world: Api, value: str) -> None:
    before = ledger_state(world.app)
    me(world, "GET", "/v1/me", headers={"Sec-GPC": value})
    assert ledger_state(world.app) == before


def test_honours_gpc_is_set_and_shown_on_purposes(world: Api) -> None:
    training = world.call("GET", "/v1/purposes/model_training", role="app").get_json()
    assert training["honours_gpc"] is False
    patched = world.call("PATCH", "/v1/purposes/model_training", json={"honours_gpc": True})
    assert patched.get_json()["honours_gpc"] is True
    last = world.call("GET", "/v1/audit?limit=1000", role="admin").get_json()["events"][-1]
    assert (last["kind"], last["data"]["after"]) == ("purpose_updated", {"honours_gpc": True})
    created = world.call("GET", "/v1/audit?limit=1000").get_json()["events"]
    ads = next(e for e in created if e["kind"] == "purpose_created" and e["purpose"] == "ads")
    assert ads["data"]["honours_gpc"] is True
    for value in ("yes", 1, None):
        resp = world.call("PATCH", "/v1/purposes/ads", json={"honours_gpc": value})
        assert "honours_gpc" in assert_problem(resp, 422)["errors"]


# --- CORS ----------------------------------------------------------------------------------------


@pytest.fixture
def cors(database_url: str) -> Iterator[Api]:
    """An app serving one browser origin."""
    app = create_app({**app_config(database_url), "CONSENT_CORS_ORIGINS": (ALLOWED_ORIGIN,)})
    api = Api(app, app.test_client())
    api.purpose()
    yield api
    with app.app_context():
        db.engine.dispose()


def test_an_allowed_origin_may_call_v1_me_from_the_browser(cors: Api) -> None:
    preflight = cors.client.options(
        "/v1/me/consents/model_training",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "PUT" in preflight.headers["Access-Control-Allow-Methods"]
    allowed_headers = preflight.headers["Access-Control-Allow-Headers"].lower()
    for name in ("authorization", "content-type", "if-match", "idempotency-key", "sec-gpc"):
        assert name in allowed_headers
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert "Origin" in preflight.headers["Vary"]
    resp = me(cors, "PUT", "/v1/me/consents/model_training", json={"state": "granted"},
              headers={"Origin": ALLOWED_ORIGIN})  # fmt: skip
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in resp.headers
    # Its errors are readable too, so the app can tell the user what went wrong.
    refused = cors.client.get("/v1/me", headers={"Origin": ALLOWED_ORIGIN})
    assert_problem(refused, 401)
    assert refused.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


def test_another_origin_gets_no_cors_headers_and_is_refused_before_anything_is_written(
    cors: Api,
) -> None:
    before = ledger_state(cors.app)
    evil = "https://evil.example"
    preflight = cors.client.options(
        "/v1/me/consents/model_training",
        headers={"Origin": evil, "Access-Control-Request-Method": "PUT"},
    )
    assert_problem(preflight, 403)
    for method, path, body in ME_OPERATIONS:
        resp = me(cors, method, path, json=body, headers={"Origin": evil})
        problem = assert_problem(resp, 403)
        assert problem["type"].endswith(":origin-not-allowed")
        assert not any(name.startswith("Access-Control-") for name, _ in resp.headers)
    for origin in ("null", ALLOWED_ORIGIN + ".evil.example", "http://app.example.com"):
        assert_problem(me(cors, "GET", "/v1/me", headers={"Origin": origin}), 403)
    assert ledger_state(cors.app) == before


def test_cors_is_for_v1_me_only(cors: Api) -> None:
    resp = cors.call("GET", "/v1/purposes", role="app", headers={"Origin": ALLOWED_ORIGIN})
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_requests_without_an_origin_or_from_the_ledgers_own_origin_pass(cors: Api) -> None:
    assert me(cors, "GET", "/v1/me").status_code == 200
    own = me(cors, "GET", "/v1/me", headers={"Origin": "http://localhost"})
    assert own.status_code == 200


def test_no_cors_origin_is_served_unless_configured(world: Api) -> None:
    resp = me(world, "GET", "/v1/me", headers={"Origin": ALLOWED_ORIGIN})
    assert_problem(resp, 403)


# --- rate limits per user ------------------------------------------------------------------------


def test_a_users_requests_are_limited_per_user_across_tokens(database_url: str) -> None:
    app = create_app({**app_config(database_url), "CONSENT_USER_RATE_LIMIT": "3/minute"})
    try:
        client = app.test_client()
        statuses = [
            client.get("/v1/me", headers=bearer(user_token("alice"))).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        problem = assert_problem(client.get("/v1/me", headers=bearer(user_token("alice"))), 429)
        assert "for this user" in problem["detail"]
        assert client.get("/v1/me", headers=bearer(user_token("bob"))).status_code == 200
        # A forged token for alice is refused before it could spend her allowance.
        forged = jwt.encode({"sub": "bob"}, "x" * 32, algorithm="HS256")
        for _ in range(5):
            assert client.get("/v1/me", headers=bearer(forged)).status_code == 401
        assert client.get("/v1/me", headers=bearer(user_token("bob"))).status_code == 200
    finally:
        with app.app_context():
            db.engine.dispose()


# --- logs ----------------------------------------------------------------------------------------


def test_nothing_logged_holds_a_token_or_its_contents(
    world: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(datetime.now(UTC).timestamp())
    tokens = [user_token("alice"), user_token("bob")]
    tokens.append(
        jwt.encode(
            {"sub": "alice", "aud": "x", "iat": now, "exp": now + 60, "jti": "secret-jti-1"},
            USER_TOKEN_SECRET,
            algorithm="HS256",
        )
    )
    tokens.append(tokens[0][:-4] + "AAAA")  # a broken signature
    for token in tokens:
        for method, path, body in ME_OPERATIONS:
            world.client.open(path, method=method, headers=bearer(token), json=body)
        world.client.get("/v1/purposes", headers=bearer(token))
    access = [r for r in caplog.records if r.name == "consent.access"]
    assert len(access) == len(tokens) * (len(ME_OPERATIONS) + 1)
    assert {getattr(r, "key", None) for r in access} >= {"user:alice", "user:bob"}
    logged = caplog.text + json.dumps([vars(r) for r in caplog.records], default=str)
    for token in tokens:
        for part in token.split("."):
            assert part not in logged
    assert "secret-jti-1" not in logged


# --- the README's example ------------------------------------------------------------------------


def test_the_readmes_minting_example_makes_a_token_a_jwks_configured_ledger_accepts(
    database_url: str, tmp_path: Path
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [block] = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def user_token(" in b
    ]
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "product-2026-12", "alg": "ES256"}]}))
    config = {
        **app_config(database_url),
        "CONSENT_USER_TOKEN_SECRET": None,
        "CONSENT_USER_TOKEN_JWKS": str(jwks),
    }
    app = create_app(config)
    try:
        token = namespace["user_token"]("alice", pem)
        resp = app.test_client().get("/v1/me", headers=bearer(token))
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["user_id"] == "alice"
        # This ledger trusts only its JWKS: the tests' HS256 tokens are refused.
        assert_problem(app.test_client().get("/v1/me", headers=bearer(user_token("alice"))), 401)
    finally:
        with app.app_context():
            db.engine.dispose()
