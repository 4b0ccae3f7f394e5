"""Every error is problem+json with its own status, and a failed request writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from service import create_app
from service.runtime.extensions import db
from tests.conftest import app_config
from tests.factories import PROBLEM, Api, assert_problem, bearer, ledger_state

CHOICE = "/v1/users/u1/consents/model_training"
OVERRIDE = {"purpose": "model_training", "state": "granted", "reason": "complaint", "ticket": "T-1"}


@pytest.fixture
def world(api: Any) -> dict[str, Any]:
    """A purpose, a user with a choice and an active override, and an erased user."""
    api.purpose()
    api.user("u1", jurisdiction="DE")
    assert api.choose("u1", "granted").status_code == 200
    placed = api.override("u1", "denied")
    assert placed.status_code == 201
    assert api.call("DELETE", "/v1/users/gone", role="app").status_code == 200
    return {"override_id": placed.get_json()["id"]}


@pytest.fixture
def unchanged(app: Flask, world: dict[str, Any]) -> Iterator[None]:
    """Fail the test if anything was written to the ledger while it ran."""
    before = ledger_state(app)
    yield
    assert ledger_state(app) == before


def send(api: Api, method: str, path: str, data: str | bytes, **headers: str) -> TestResponse:
    """Send a raw body as admin with the given headers (JSON unless told otherwise)."""
    headers.setdefault("Content-Type", "application/json")
    return api.client.open(
        path, method=method, data=data, headers=bearer(api.tokens["admin"], **headers)
    )


# --- 400 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ['{"state": ', "{'state': 'granted'}", "{state}", "\x00", "[1,]"])
def test_malformed_json_is_a_400_and_writes_nothing(api: Any, unchanged: None, body: str) -> None:
    assert_problem(send(api, "PUT", CHOICE, body), 400)


@pytest.mark.parametrize("if_match", ["version-1", '"1", nonsense', '"abc"', "W/", '"' + "9" * 30])
def test_malformed_if_match_is_a_400_and_writes_nothing(
    api: Any, unchanged: None, if_match: str
) -> None:
    resp = api.call(
        "PUT", CHOICE, role="app", json={"state": "denied"}, headers={"If-Match": if_match}
    )
    body = assert_problem(resp, 400)
    assert "If-Match" in body["errors"]


# --- 404 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/nope", "/v1/users", "/v1/users/u1/nope"])
def test_an_unknown_route_is_a_404(api: Any, unchanged: None, path: str) -> None:
    assert_problem(api.call("GET", path), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/ghost",
        "/v1/users/ghost/consents",
        "/v1/users/ghost/consents/model_training",
        "/v1/users/ghost/events",
        "/v1/users/ghost/overrides",
    ],
)
def test_reading_an_unknown_user_is_a_404_naming_them(api: Any, unchanged: None, path: str) -> None:
    body = assert_problem(api.call("GET", path), 404)
    assert "ghost" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/purposes/nope", None),
        ("PATCH", "/v1/purposes/nope", {"title": "Nope"}),
        ("GET", "/v1/users/u1/consents/nope", None),
        ("PUT", "/v1/users/u1/consents/nope", {"state": "granted"}),
        # An unknown user is auto-registered by a choice or override, but not for a bad purpose.
        ("PUT", "/v1/users/newcomer/consents/nope", {"state": "granted"}),
        ("POST", "/v1/users/newcomer/overrides", {**OVERRIDE, "purpose": "nope"}),
    ],
)
def test_an_unknown_purpose_is_a_404_naming_it_and_registers_nobody(
    api: Any, unchanged: None, method: str, path: str, body: Any
) -> None:
    problem = assert_problem(api.call(method, path, json=body), 404)
    assert "nope" in problem["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/users/u1/overrides/999999?reason=mistake",
        "/v1/users/ghost/overrides/{override_id}?reason=mistake",
        "/v1/users/gone/overrides/{override_id}?reason=mistake",
    ],
)
def test_an_unknown_override_is_a_404(
    api: Any, world: dict[str, Any], unchanged: None, path: str
) -> None:
    assert_problem(api.call("DELETE", path.format(**world), role="support"), 404)


# --- 405 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/purposes"),
        ("PUT", "/v1/purposes/model_training"),
        ("POST", "/v1/users/u1"),
        ("PATCH", "/v1/users/u1/consents/model_training"),
        ("POST", "/v1/users/u1/events"),
    ],
)
def test_a_wrong_method_is_a_405_with_an_allow_header(
    api: Any, unchanged: None, method: str, path: str
) -> None:
    resp = api.call(method, path, json={})
    assert_problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


# --- 409 -----------------------------------------------------------------------------------------


def test_creating_an_existing_purpose_is_a_409(api: Any, unchanged: None) -> None:
    resp = api.call(
        "POST",
        "/v1/purposes",
        json={"key": "model_training", "title": "Again", "defaults": {"*": "granted"}},
    )
    body = assert_problem(resp, 409)
    assert "model_training" in body["detail"]


def test_placing_a_second_active_override_is_a_409_naming_the_first(
    api: Any, world: dict[str, Any], unchanged: None
) -> None:
    body = assert_problem(api.override("u1", "granted"), 409)
    assert str(world["override_id"]) in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/users/gone", {"jurisdiction": "FR"}),
        ("PUT", "/v1/users/gone/consents/model_training", {"state": "granted"}),
        ("POST", "/v1/users/gone/overrides", OVERRIDE),
    ],
)
def test_changing_an_erased_user_is_a_409(
    api: Any, unchanged: None, method: str, path: str, body: Any
) -> None:
    problem = assert_problem(api.call(method, path, json=body), 409)
    assert "erased" in problem["detail"]


def test_lifting_a_lifted_override_is_a_409(api: Any, world: dict[str, Any]) -> None:
    path = f"/v1/users/u1/overrides/{world['override_id']}?reason=resolved"
    assert api.call("DELETE", path, role="support").status_code == 200
    before = ledger_state(api.app)
    assert_problem(api.call("DELETE", path, role="support"), 409)
    assert ledger_state(api.app) == before


# --- 412 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ['"0"', '"2"', 'W/"7"', '"0", "2"'])
def test_a_stale_if_match_is_a_412_and_writes_nothing(
    api: Any, unchanged: None, if_match: str
) -> None:
    resp = api.call(
        "PUT", CHOICE, role="app", json={"state": "denied"}, headers={"If-Match": if_match}
    )
    body = assert_problem(resp, 412)
    assert "version 1" in body["detail"]


# --- 413 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/users/u1"),
        ("PUT", CHOICE),
        ("POST", "/v1/purposes"),
        ("POST", "/v1/users/u1/overrides"),
    ],
)
def test_a_body_over_the_size_limit_is_a_413(
    api: Any, unchanged: None, method: str, path: str
) -> None:
    limit = api.app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"jurisdiction": "x" * limit, "state": "granted"})
    assert len(body) > limit >= 1024 * 1024
    assert_problem(send(api, method, path, body), 413)


# --- 415 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", '{"state": "granted"}'),
        ("application/x-www-form-urlencoded", "state=granted"),
        ("application/xml", "<state>granted</state>"),
    ],
)
def test_a_body_that_is_not_json_is_a_415(
    api: Any, unchanged: None, content_type: str, data: str
) -> None:
    body = assert_problem(send(api, "PUT", CHOICE, data, **{"Content-Type": content_type}), 415)
    assert content_type in body["detail"]


# --- 422 -----------------------------------------------------------------------------------------

INVALID_BODIES = [
    # unknown fields are refused rather than ignored
    ("PUT", "/v1/users/u1", {"jurisdiction": "DE", "colour": "red"}, "colour"),
    ("PUT", CHOICE, {"state": "granted", "sauce": "api"}, "sauce"),
    ("POST", "/v1/users/u1/overrides", {**OVERRIDE, "priority": 1}, "priority"),
    ("PATCH", "/v1/purposes/model_training", {"titel": "typo"}, "titel"),
    (
        "POST",
        "/v1/purposes",
        {"key": "analytics", "title": "A", "defaults": {}, "owner": "me"},
        "owner",
    ),
    # missing required fields
    ("PUT", "/v1/users/u1", {}, "jurisdiction"),
    ("PUT", CHOICE, {"source": "settings"}, "state"),
    ("POST", "/v1/users/u1/overrides", {**OVERRIDE, "reason": None}, "reason"),
    ("POST", "/v1/users/u1/overrides", {"purpose": "model_training", "state": "denied"}, "ticket"),
    ("POST", "/v1/purposes", {"key": "analytics", "defaults": {}}, "title"),
    ("POST", "/v1/purposes", {"key": "analytics", "title": "A"}, "defaults"),
    ("PATCH", "/v1/purposes/model_training", {}, "_schema"),
    # bad state values
    ("PUT", CHOICE, {"state": "maybe"}, "state"),
    ("PUT", CHOICE, {"state": "GRANTED"}, "state"),
    ("PUT", CHOICE, {"state": True}, "state"),
    ("POST", "/v1/users/u1/overrides", {**OVERRIDE, "state": "allowed"}, "state"),
    ("PATCH", "/v1/purposes/model_training", {"unknown_subject": "yes"}, "unknown_subject"),
    ("PUT", CHOICE, {"state": "granted", "source": "Settings Page"}, "source"),
    # bad jurisdictions
    ("PUT", "/v1/users/u1", {"jurisdiction": "XX"}, "jurisdiction"),
    ("PUT", "/v1/users/u1", {"jurisdiction": "Germany"}, "jurisdiction"),
    ("PUT", "/v1/users/u1", {"jurisdiction": "EEA"}, "jurisdiction"),
    ("PUT", "/v1/users/u1", {"jurisdiction": ""}, "jurisdiction"),
    ("PUT", "/v1/users/u1", {"jurisdiction": 49}, "jurisdiction"),
    # bad default policies
    ("PATCH", "/v1/purposes/model_training", {"defaults": {"Mars": "granted"}}, "defaults.Mars"),
    ("PATCH", "/v1/purposes/model_training", {"defaults": {"EU": "denied"}}, "defaults.EU"),
    ("PATCH", "/v1/purposes/model_training", {"defaults": {"*": "maybe"}}, "defaults"),
    (
        "PATCH",
        "/v1/purposes/model_training",
        {"defaults": {"de": "denied", "DE": "granted"}},
        "defaults",
    ),
    (
        "POST",
        "/v1/purposes",
        {"key": "analytics", "title": "A", "defaults": {"XX": "denied"}},
        "defaults.XX",
    ),
    ("POST", "/v1/purposes", {"key": "Bad-Key", "title": "A", "defaults": {}}, "key"),
    # expiry in the past, or not a time
    (
        "POST",
        "/v1/users/u2/overrides",
        {**OVERRIDE, "expires_at": "2001-01-01T00:00:00Z"},
        "expires_at",
    ),
    (
        "POST",
        "/v1/users/u2/overrides",
        {**OVERRIDE, "expires_at": "2999-01-01T00:00:00"},
        "expires_at",
    ),
    ("POST", "/v1/users/u2/overrides", {**OVERRIDE, "expires_at": "tomorrow"}, "expires_at"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    INVALID_BODIES,
    ids=[f"{m} {p} {json.dumps(b)[:60]}" for m, p, b, _ in INVALID_BODIES],
)
def test_an_invalid_body_is_a_422_naming_the_field_and_writes_nothing(
    api: Any, unchanged: None, method: str, path: str, body: Any, field: str
) -> None:
    problem = assert_problem(api.call(method, path, json=body), 422)
    assert problem["title"] == "Validation failed"
    assert isinstance(problem["errors"], dict)
    assert any(field in name for name in problem["errors"]), problem["errors"]


BAD_USER_IDS = ["bad id!", "a" * 65, "ünïcode", "semi;colon", "quote'", "<script>", "\x00"]
USER_PATHS = [
    ("GET", "/v1/users/{}", None),
    ("PUT", "/v1/users/{}", {"jurisdiction": "DE"}),
    ("DELETE", "/v1/users/{}", None),
    ("GET", "/v1/users/{}/consents", None),
    ("GET", "/v1/users/{}/consents/model_training", None),
    ("PUT", "/v1/users/{}/consents/model_training", {"state": "granted"}),
    ("GET", "/v1/users/{}/events", None),
    ("GET", "/v1/users/{}/overrides", None),
    ("POST", "/v1/users/{}/overrides", OVERRIDE),
    ("DELETE", "/v1/users/{}/overrides/1?reason=mistake", None),
]


@pytest.mark.parametrize("user_id", BAD_USER_IDS, ids=lambda u: repr(u)[:20])
@pytest.mark.parametrize(("method", "template", "body"), USER_PATHS, ids=lambda x: str(x)[:40])
def test_a_malformed_user_id_in_the_path_is_a_422(
    api: Any, unchanged: None, user_id: str, method: str, template: str, body: Any
) -> None:
    path = template.format(quote(user_id, safe=""))
    problem = assert_problem(api.call(method, path, json=body), 422)
    assert "user_id" in problem["errors"]


def test_a_64_character_user_id_is_accepted_but_65_is_not(api: Any) -> None:
    assert api.call("PUT", f"/v1/users/{'a' * 64}", json={"jurisdiction": None}).status_code == 200
    before = ledger_state(api.app)
    assert_problem(api.call("PUT", f"/v1/users/{'a' * 65}", json={"jurisdiction": None}), 422)
    assert ledger_state(api.app) == before


@pytest.mark.parametrize("query", ["", "?reason=", "?reason=ab", "?reason=" + "x" * 2001])
def test_lifting_without_a_proper_reason_is_a_422(
    api: Any, world: dict[str, Any], unchanged: None, query: str
) -> None:
    path = f"/v1/users/u1/overrides/{world['override_id']}{query}"
    problem = assert_problem(api.call("DELETE", path, role="support"), 422)
    assert "reason" in problem["errors"]


@pytest.mark.parametrize(
    "query", ["?after=-1", "?limit=0", "?limit=10001", "?limit=x", "?after=1.5"]
)
def test_bad_paging_of_a_history_is_a_422(api: Any, unchanged: None, query: str) -> None:
    assert_problem(api.call("GET", f"/v1/users/u1/events{query}"), 422)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/users/u1/events?page=2"),
        ("GET", "/v1/users/u1/events?limt=10"),
        ("DELETE", "/v1/users/u1/overrides/{override_id}?reason=resolved&notify=yes"),
    ],
)
def test_an_unknown_query_parameter_is_a_422_like_an_unknown_body_field(
    api: Any, world: dict[str, Any], method: str, path: str
) -> None:
    before = ledger_state(api.app)
    resp = api.call(method, path.format(**world), role="support")
    problem = assert_problem(resp, 422)
    assert problem["errors"]
    assert ledger_state(api.app) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/users/u1/overrides/99999999999999999999?reason=mistake"),
        ("DELETE", "/v1/users/u1/overrides/2147483648?reason=mistake"),
        ("GET", "/v1/users/u1/events?after=99999999999999999999"),
        ("GET", "/v1/users/u1/events?after=9223372036854775808"),
    ],
)
def test_an_integer_beyond_the_database_range_is_refused_not_a_500(
    api: Any, unchanged: None, method: str, path: str
) -> None:
    resp = api.call(method, path, role="support")
    assert resp.status_code in (404, 422), resp.get_data(as_text=True)
    assert_problem(resp, resp.status_code)


@pytest.mark.parametrize("reason", ["nul%00byte", "%00%00%00", "%ED%A0%80abc", "%FF%FE%FD"])
def test_a_lift_reason_with_odd_bytes_is_stored_or_refused_never_a_500(
    api: Any, world: dict[str, Any], reason: str
) -> None:
    path = f"/v1/users/u1/overrides/{world['override_id']}?reason={reason}"
    resp = api.call("DELETE", path, role="support")
    assert resp.status_code in (200, 422), resp.get_data(as_text=True)
    if resp.status_code == 422:
        assert_problem(resp, 422)


@pytest.mark.parametrize("key", ["x" * 256, ""])
def test_an_idempotency_key_of_a_bad_length_is_a_422(api: Any, unchanged: None, key: str) -> None:
    resp = api.choose("u1", "denied", **{"Idempotency-Key": key})
    assert "Idempotency-Key" in assert_problem(resp, 422)["errors"]


@pytest.mark.parametrize("key", ["nul\x00key", "\x00", "tab\tkey", "ü-key"])
def test_an_idempotency_key_with_odd_characters_is_honoured_or_refused_never_a_500(
    api: Any, world: dict[str, Any], key: str
) -> None:
    first = api.choose("u1", "denied", **{"Idempotency-Key": key})
    assert first.status_code in (200, 422), first.get_data(as_text=True)
    if first.status_code == 422:
        assert_problem(first, 422)
        return
    before = ledger_state(api.app)
    retry = api.choose("u1", "denied", **{"Idempotency-Key": key})
    assert retry.get_json() == first.get_json()
    assert ledger_state(api.app) == before


def test_reusing_an_idempotency_key_for_a_different_choice_is_a_422(api: Any) -> None:
    api.purpose()
    first = api.choose("u1", "denied", **{"Idempotency-Key": "k-1"})
    assert first.status_code == 200
    before = ledger_state(api.app)
    problem = assert_problem(api.choose("u1", "granted", **{"Idempotency-Key": "k-1"}), 422)
    assert "Idempotency-Key" in problem["errors"]
    other_user = api.choose("u9", "denied", **{"Idempotency-Key": "k-1"})
    assert_problem(other_user, 422)
    assert ledger_state(api.app) == before
    assert api.consent("u1")["state"] == "denied"


def test_reusing_an_idempotency_key_for_a_different_override_is_a_422(api: Any) -> None:
    api.purpose()
    headers = {"Idempotency-Key": "ovr-1"}
    placed = api.call(
        "POST", "/v1/users/u1/overrides", role="support", json=OVERRIDE, headers=headers
    )
    assert placed.status_code == 201
    before = ledger_state(api.app)
    changed = {**OVERRIDE, "ticket": "T-2"}
    resp = api.call("POST", "/v1/users/u1/overrides", role="support", json=changed, headers=headers)
    assert "Idempotency-Key" in assert_problem(resp, 422)["errors"]
    assert ledger_state(api.app) == before


# --- 5xx -----------------------------------------------------------------------------------------


@pytest.fixture
def unreachable_app() -> Iterator[Flask]:
    """An app whose PostgreSQL refuses every connection."""
    app = create_app(app_config("postgresql+psycopg://postgres@127.0.0.1:1/nope"))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/purposes", None),
        ("GET", "/v1/users/u1/consents/model_training", None),
        ("PUT", CHOICE, {"state": "granted"}),
    ],
)
def test_an_unreachable_database_is_a_503_with_retry_after(
    unreachable_app: Flask, method: str, path: str, body: Any
) -> None:
    client = unreachable_app.test_client()
    resp = client.open(path, method=method, json=body, headers=bearer("cl_any-token"))
    problem = assert_problem(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in problem["detail"]
    assert "nope" not in problem["detail"]


def test_an_unexpected_exception_is_a_500_that_leaks_nothing(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> list[dict[str, Any]]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr("service.ledger.purposes.list_all", explode)
    api.app.config["PROPAGATE_EXCEPTIONS"] = False
    resp = api.call("GET", "/v1/purposes", role="pipeline")
    assert_problem(resp, 500)
    assert "secret detail" not in resp.get_data(as_text=True)
    assert "RuntimeError" not in resp.get_data(as_text=True)
    assert "secret detail" in caplog.text


# --- hostile input -------------------------------------------------------------------------------

# Each write with a valid body; "{n}" makes every attempt address a fresh purpose or user, so a
# value is judged on its own rather than refused as a duplicate of an earlier attempt.
WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/purposes", {"key": "p{n}", "title": "A", "defaults": {"*": "denied"}}),
    (
        "PATCH",
        "/v1/purposes/model_training",
        {
            "title": "B",
            "description": "d",
            "defaults": {"*": "granted"},
            "unknown_subject": "denied",
        },
    ),
    ("PUT", "/v1/users/u{n}", {"jurisdiction": "FR"}),
    ("PUT", "/v1/users/u{n}/consents/model_training", {"state": "denied", "source": "settings"}),
    ("POST", "/v1/users/u{n}/overrides", {**OVERRIDE, "expires_at": None}),
]
WRITE_IDS = [f"{method} {path}" for method, path, _ in WRITES]
DEEP = 100_000
RAW_BODIES = [
    "null",
    "[]",
    "[null]",
    '[{"state": "granted"}]',
    '"granted"',
    "1",
    "-1e999",
    "true",
    '""',
    "{}",
    '{"": ""}',
    "[" * DEEP + "]" * DEEP,
    '{"a":' * DEEP + "1" + "}" * DEEP,
    '"' + "x" * 500_000 + '"',
    "NaN",
    '{"state": NaN}',
    "\ufeff{}",
    '"\\ud800"',
]
HOSTILE_VALUES: list[Any] = [
    None,
    "",
    " ",
    "x" * 100_000,
    "ü" * 70,
    "日本語",
    "\u202e" + "denied",
    "\x00",
    "nul\x00byte",
    "\ud800",
    "granted\n",
    "1",
    "12345678901234567890",
    0,
    -1,
    1.5,
    10**40,
    True,
    [],
    ["granted"],
    {},
    {"nested": {"deeper": [1, 2, {"x": None}]}},
    {"\x00": "granted"},
    {"*": "\ud800"},
    "2999-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",
    "0000-00-00T00:00:00Z",
]


def fill(template: Any, n: int) -> Any:
    """Put n in place of every "{n}" in a path or body template."""
    if isinstance(template, str):
        return template.replace("{n}", str(n))
    if isinstance(template, dict):
        return {k: fill(v, n) for k, v in template.items()}
    return template


def mishandled(resp: TestResponse, what: str) -> list[str]:
    """Describe how resp breaks "never a 5xx, every error a problem", or return nothing."""
    if resp.status_code >= 500 or (resp.status_code >= 400 and resp.mimetype != PROBLEM):
        return [f"{what}: {resp.status_code} {resp.mimetype}"]
    return []


@pytest.mark.parametrize(("method", "path", "_"), WRITES, ids=WRITE_IDS)
def test_hostile_raw_bodies_are_refused_with_a_problem_never_a_500(
    api: Any, world: dict[str, Any], method: str, path: str, _: Any
) -> None:
    before = ledger_state(api.app)
    failures = []
    for n, raw in enumerate(RAW_BODIES):
        resp = send(api, method, fill(path, n), raw.encode("utf-8", "surrogatepass"))
        failures += mishandled(resp, repr(raw[:30]))
        if resp.status_code < 400:
            failures.append(f"{raw[:30]!r}: accepted with {resp.status_code}")
    assert not failures, "\n".join(failures)
    assert ledger_state(api.app) == before


@pytest.mark.parametrize(("method", "path", "valid"), WRITES, ids=WRITE_IDS)
def test_hostile_field_values_are_refused_or_stored_never_a_500(
    api: Any, world: dict[str, Any], method: str, path: str, valid: dict[str, Any]
) -> None:
    failures = []
    attempts = ((field, value) for field in valid for value in HOSTILE_VALUES)
    for n, (field, value) in enumerate(attempts):
        body = {**fill(valid, n), field: value}
        resp = send(api, method, fill(path, n), json.dumps(body))
        failures += mishandled(resp, f"{field}={value!r:.30}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "user_id", ["x" * 5000, "%00", "ü" * 64, "%ff%fe", "a%0Ab", "%F0%9F%92%A9"]
)
def test_hostile_user_ids_in_the_path_are_refused_never_a_500(
    api: Any, world: dict[str, Any], user_id: str
) -> None:
    before = ledger_state(api.app)
    failures = []
    for method, template, body in USER_PATHS:
        resp = api.call(method, template.format(user_id), json=body)
        failures += mishandled(resp, f"{method} {template}")
        if resp.status_code < 400:
            failures.append(f"{method} {template}: accepted with {resp.status_code}")
    assert not failures, "\n".join(failures)
    assert ledger_state(api.app) == before
