"""Restrictions over HTTP: placing, listing, reading, lifting, their events and exact `changed`
counts, previews, roles, and every bad input refused with a precise 422 that writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service import create_app
from service.runtime.extensions import db
from tests.conftest import Clock, app_config, clean_database
from tests.factories import Api, assert_problem, ledger_state

PURPOSE = "model_training"
WINDOW = {
    "from": "2024-01-01T00:00:00Z",
    "to": "2024-07-01T00:00:00+02:00",
    "time_basis": "processed",
}


def order(**overrides: Any) -> dict[str, Any]:
    """A valid restriction body (the EEA, processed in the first half of 2024)."""
    return {
        "authority": "Data Protection Commission",
        "instrument": "Undertaking of 2024-06-14",
        "purposes": [PURPOSE],
        "jurisdictions": ["EEA"],
        "window": WINDOW,
        "reason": "Regulator's order",
        "ticket": "LEG-42",
        **overrides,
    }


def place(api: Api, **overrides: Any) -> dict[str, Any]:
    resp = api.call("POST", "/v1/restrictions", json=order(**overrides))
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def lift(api: Api, restriction_id: int, reason: str = "order withdrawn") -> dict[str, Any]:
    resp = api.call("DELETE", f"/v1/restrictions/{restriction_id}", query_string={"reason": reason})
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def feed(api: Api, query: str = "") -> list[dict[str, Any]]:
    resp = api.call("GET", f"/v1/changes?limit=10000{query}", role="pipeline")
    assert resp.status_code == 200, resp.get_json()
    return list(resp.get_json()["events"])


@pytest.fixture(params=["sync", "off"], ids=["index", "database"])
def counted(request: pytest.FixtureRequest, template_db: str, tmp_path: Path) -> Iterator[Api]:
    """Subjects whose answers a restriction on DE and US moves in every way, on an app that
    counts with the read index or with SQL alone:
    de-default (DE, denied by default), de-chose (DE, granted by choice), us-default (US),
    us-chose (US, denied by choice), us-forced (US, denied by choice, granted by override),
    us-gone (US, erased), br (BR), none (no jurisdiction)."""
    app: Flask = create_app(
        {**app_config(clean_database(template_db, tmp_path)), "CONSENT_INDEX": request.param}
    )
    api = Api(app, app.test_client())
    api.purpose()
    api.user("de-default", jurisdiction="DE")
    api.user("de-chose", jurisdiction="DE")
    api.choose("de-chose", "granted")
    api.user("us-default", jurisdiction="US")
    api.user("us-chose", jurisdiction="US")
    api.choose("us-chose", "denied")
    api.user("us-forced", jurisdiction="US")
    api.choose("us-forced", "denied")
    assert api.override("us-forced", "granted").status_code == 201
    api.user("us-gone", jurisdiction="US")
    assert api.call("DELETE", "/v1/users/us-gone", role="app").status_code == 200
    api.user("br", jurisdiction="BR")
    api.user("none")
    # A read builds the index (sync mode): writes from now on count with it.
    assert api.call("GET", f"/v1/lookup/{PURPOSE}/none", role="pipeline").status_code == 200
    assert (app.extensions["consent_index"].index is not None) == (request.param == "sync")
    yield api
    with app.app_context():
        db.engine.dispose()


def test_placing_writes_the_row_and_one_event_per_purpose_with_what_it_changed(
    counted: Api,
) -> None:
    api = counted
    api.purpose(key="ads", defaults={"*": "granted"})
    body = place(api, purposes=[PURPOSE, "ads"], jurisdictions=["de", "US"], window=None)
    assert body["purposes"] == [PURPOSE, "ads"]
    assert body["jurisdictions"] == ["DE", "US"]  # selectors kept in upper case
    assert body["status"] == "active"
    assert body["placed_by"] == "admin-key"
    assert body["window"] is None
    # model_training: de-chose, us-default, us-forced were allowed; ads: every known DE/US
    # subject but the erased one.
    assert body["changed"] == {"placed": {PURPOSE: 3, "ads": 5}, "lifted": None}
    events = [e for e in feed(api) if e["kind"] == "restriction_placed"]
    assert [(e["seq"], e["purpose"], e["data"]["changed"]) for e in events] == [
        (body["placed_seq"], PURPOSE, 3),
        (body["placed_seq"] + 1, "ads", 5),
    ]
    assert events[0]["user_id"] is None
    assert (events[0]["reason"], events[0]["ticket"]) == ("Regulator's order", "LEG-42")
    assert events[0]["data"]["restriction_id"] == body["id"]
    assert [e["purpose"] for e in feed(api, "&purpose=ads") if e["user_id"] is None][-1] == "ads"
    audit = api.call("GET", "/v1/audit?limit=10000").get_json()["events"]
    assert events[1] in audit


def test_changed_counts_only_answers_that_change_and_lifting_counts_them_back(
    counted: Api,
) -> None:
    api = counted
    first = place(api, jurisdictions=["DE", "US"], window=None)
    assert first["changed"]["placed"] == {PURPOSE: 3}
    # Everyone in the US is denied already: a second order there changes no one's answer.
    second = place(api, jurisdictions=["US"])
    assert second["changed"]["placed"] == {PURPOSE: 0}
    # Lifting the first allows de-chose again; the US stays under the second.
    assert lift(api, first["id"])["changed"] == {
        "placed": {PURPOSE: 3},
        "lifted": {PURPOSE: 1},
    }
    assert lift(api, second["id"])["changed"]["lifted"] == {PURPOSE: 2}
    everyone = place(api, jurisdictions=["*"], window=None)
    # de-chose, us-default, us-forced, br, none; not the erased or the denied.
    assert everyone["changed"]["placed"] == {PURPOSE: 5}


def test_changed_sees_an_override_expiring_in_the_same_write(counted: Api, clock: Clock) -> None:
    api = counted
    expires = clock.now + timedelta(hours=1)
    api.user("br-forced", jurisdiction="BR")
    api.choose("br-forced", "denied")
    assert api.override("br-forced", "granted", expires_at=expires.isoformat()).status_code == 201
    assert api.call("GET", f"/v1/lookup/{PURPOSE}/br", role="pipeline").status_code == 200
    clock.now = expires + timedelta(seconds=1)
    # The write expires the override first (its event comes before the restriction's): then
    # br-forced is denied by their own choice, and only br's answer changes.
    placed = place(api, jurisdictions=["BR"], window=None)
    assert placed["changed"]["placed"] == {PURPOSE: 1}
    kinds = [e["kind"] for e in feed(api)[-2:]]
    assert kinds == ["override_expired", "restriction_placed"]


def test_a_preview_counts_what_placing_or_lifting_would_change_and_writes_nothing(
    counted: Api,
) -> None:
    api = counted
    before = ledger_state(api.app)
    preview = api.call("POST", "/v1/restrictions/impact", json=order(jurisdictions=["DE", "US"]))
    assert preview.status_code == 200, preview.get_json()
    assert preview.get_json()["purposes"] == [{"purpose": PURPOSE, "changed": 3}]
    assert preview.get_json()["changed"] == 3
    assert preview.get_json()["action"] == "place"
    assert ledger_state(api.app) == before
    placed = place(api, jurisdictions=["DE", "US"])
    lifting = api.call("GET", f"/v1/restrictions/{placed['id']}/impact").get_json()
    assert (lifting["action"], lifting["id"], lifting["changed"]) == ("lift", placed["id"], 3)
    assert lift(api, placed["id"])["changed"]["lifted"] == {PURPOSE: 3}
    assert_problem(api.call("GET", f"/v1/restrictions/{placed['id']}/impact"), 409)
    assert_problem(api.call("GET", "/v1/restrictions/999/impact"), 404)
    scope = {"purposes": ["nope"], "jurisdictions": ["DE"]}
    bad = assert_problem(api.call("POST", "/v1/restrictions/impact", json=scope), 422)
    assert set(bad["errors"]) == {"purposes.0"}


def test_a_restriction_is_read_listed_and_filtered_as_of_any_seq(api: Api) -> None:
    api.purpose()
    api.purpose(key="ads")
    first = place(api)
    second = place(api, purposes=["ads"], jurisdictions=["*"], window=None)
    lift(api, first["id"])
    got = api.call("GET", f"/v1/restrictions/{first['id']}", role="pipeline").get_json()
    assert got["status"] == "lifted"
    assert got["lift_reason"] == "order withdrawn"
    assert got["window"] == {
        "from": "2024-01-01T00:00:00Z",
        "to": "2024-06-30T22:00:00Z",
        "time_basis": "processed",
    }
    then = api.call(
        "GET", f"/v1/restrictions/{first['id']}?as_of={first['placed_seq']}", role="support"
    )
    assert (then.get_json()["status"], then.get_json()["lifted_seq"]) == ("active", None)
    early = f"/v1/restrictions/{second['id']}?as_of={first['placed_seq']}"
    assert_problem(api.call("GET", early, role="support"), 404)

    def ids(query: str = "") -> list[int]:
        resp = api.call("GET", f"/v1/restrictions{query}", role="support")
        assert resp.status_code == 200, resp.get_json()
        return [r["id"] for r in resp.get_json()]

    assert ids() == [second["id"], first["id"]]  # newest first
    assert ids("?active=true") == [second["id"]]
    assert ids("?active=false") == [first["id"]]
    assert ids("?purpose=ads") == [second["id"]]
    assert ids(f"?as_of={first['placed_seq']}&active=true") == [first["id"]]
    assert_problem(api.call("GET", "/v1/restrictions/12345", role="support"), 404)
    assert_problem(api.call("GET", "/v1/restrictions?colour=red", role="support"), 422)


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        ("app", "GET", "/v1/restrictions", 403),
        ("app", "GET", "/v1/restrictions/1", 403),
        ("pipeline", "GET", "/v1/restrictions", 200),
        ("support", "GET", "/v1/restrictions/1", 200),
        ("support", "POST", "/v1/restrictions", 403),
        ("pipeline", "DELETE", "/v1/restrictions/1?reason=because", 403),
        ("support", "POST", "/v1/restrictions/impact", 403),
        ("support", "GET", "/v1/restrictions/1/impact", 403),
    ],
)
def test_admins_place_and_lift_and_every_role_but_app_reads(
    api: Api, role: str, method: str, path: str, status: int
) -> None:
    api.purpose()
    place(api)
    resp = api.call(method, path, role=role, json=order() if method == "POST" else None)
    assert resp.status_code == status, resp.get_json()


def test_lifting_needs_a_reason_can_happen_once_and_only_to_a_restriction_that_exists(
    api: Api,
) -> None:
    api.purpose()
    placed = place(api)
    before = ledger_state(api.app)
    missing = assert_problem(api.call("DELETE", f"/v1/restrictions/{placed['id']}"), 422)
    assert set(missing["errors"]) == {"reason"}
    assert_problem(api.call("DELETE", "/v1/restrictions/99?reason=because"), 404)
    assert ledger_state(api.app) == before
    lift(api, placed["id"])
    again = api.call("DELETE", f"/v1/restrictions/{placed['id']}?reason=because")
    assert "already lifted" in assert_problem(again, 409)["detail"]


BAD_ORDERS = [
    ({"purposes": ["nope"]}, {"purposes.0"}),
    ({"purposes": [PURPOSE, "nope", "Bad-Key"]}, {"purposes.2"}),  # the shape first
    ({"purposes": [PURPOSE, "nope", "ads"]}, {"purposes.1", "purposes.2"}),
    ({"purposes": []}, {"purposes"}),
    ({"purposes": [PURPOSE, PURPOSE]}, {"purposes.1"}),
    ({"jurisdictions": ["XX"]}, {"jurisdictions.0"}),
    ({"jurisdictions": ["EU"]}, {"jurisdictions.0"}),
    ({"jurisdictions": []}, {"jurisdictions"}),
    ({"jurisdictions": ["de", "DE"]}, {"jurisdictions.1"}),
    ({"jurisdictions": [7]}, {"jurisdictions.0"}),
    ({"window": {**WINDOW, "from": "2024-07-01T00:00:00Z"}}, {"window.to"}),
    ({"window": {**WINDOW, "to": WINDOW["from"]}}, {"window.to"}),
    ({"window": {**WINDOW, "from": "2024-01-01T00:00:00"}}, {"window.from"}),
    ({"window": {**WINDOW, "to": "2024-02-30T00:00:00Z"}}, {"window.to"}),
    ({"window": {**WINDOW, "from": 1704067200}}, {"window.from"}),
    ({"window": {**WINDOW, "time_basis": "posted"}}, {"window.time_basis"}),
    ({"window": {"from": WINDOW["from"], "to": WINDOW["to"]}}, {"window"}),
    ({"window": {**WINDOW, "until": "x"}}, {"window"}),
    ({"reason": None}, {"reason"}),
    ({"ticket": ""}, {"ticket"}),
    ({"authority": ""}, {"authority"}),
    ({"colour": "red"}, {"colour"}),
]


@pytest.mark.parametrize(("change", "fields"), BAD_ORDERS)
def test_a_bad_order_is_a_precise_422_that_writes_nothing(
    api: Api, change: dict[str, Any], fields: set[str]
) -> None:
    api.purpose()
    before = ledger_state(api.app)
    body = {k: v for k, v in order(**change).items() if v is not None}
    problem = assert_problem(api.call("POST", "/v1/restrictions", json=body), 422)
    assert set(problem["errors"]) == fields, problem
    assert ledger_state(api.app) == before


def test_a_missing_reason_or_ticket_is_named(api: Api) -> None:
    api.purpose()
    body = {k: v for k, v in order().items() if k not in ("reason", "ticket")}
    problem = assert_problem(api.call("POST", "/v1/restrictions", json=body), 422)
    assert set(problem["errors"]) == {"reason", "ticket"}


def test_placing_with_an_idempotency_key_places_once(api: Api) -> None:
    api.purpose()
    headers = {"Idempotency-Key": "order-42"}
    first = api.call("POST", "/v1/restrictions", json=order(), headers=headers)
    again = api.call("POST", "/v1/restrictions", json=order(), headers=headers)
    assert first.status_code == 201
    assert again.get_json() == first.get_json()
    assert len(api.call("GET", "/v1/restrictions").get_json()) == 1


def test_each_purpose_is_restricted_from_its_own_events_seq(api: Api) -> None:
    api.purpose(defaults={"*": "granted"})
    api.purpose(key="ads", defaults={"*": "granted"})
    api.user("u", jurisdiction="US")
    body = place(api, purposes=[PURPOSE, "ads"], jurisdictions=["US"], window=None)
    first = body["placed_seq"]

    def basis(purpose: str, seq: int) -> str:
        path = f"/v1/lookup/{purpose}/u?as_of={seq}"
        return str(api.call("GET", path, role="pipeline").get_json()["basis"])

    assert (basis(PURPOSE, first), basis("ads", first)) == ("restriction", "default")
    assert basis("ads", first + 1) == "restriction"
    lifted = lift(api, body["id"])["lifted_seq"]
    assert (basis(PURPOSE, lifted), basis("ads", lifted)) == ("default", "restriction")
    assert basis("ads", lifted + 1) == "default"
