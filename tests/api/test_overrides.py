"""Support overrides over HTTP: placing, listing, lifting, and expiry judged at event time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask

from service.ledger import overrides
from tests.conftest import Clock


def test_override_beats_user_choice_until_lifted(api: Any) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    api.choose("u1", "granted")
    placed = api.override("u1", "denied")
    assert placed.status_code == 201
    body = placed.get_json()
    assert body["status"] == "active"
    assert body["placed_by"] == "support-key"
    decision = api.consent("u1")
    assert (decision["state"], decision["basis"]) == ("denied", "override")
    assert decision["override"]["ticket"] == "SUP-1"

    lifted = api.call(
        "DELETE", f"/v1/users/u1/overrides/{body['id']}?reason=complaint+resolved", role="support"
    )
    assert lifted.status_code == 200
    assert lifted.get_json()["status"] == "lifted"
    assert lifted.get_json()["lift_reason"] == "complaint resolved"
    assert api.consent("u1")["basis"] == "choice"
    kinds = [(e["kind"], e["before"], e["after"]) for e in api.events("u1")]
    assert kinds[-2:] == [
        ("override_placed", "granted", "denied"),
        ("override_lifted", "denied", "granted"),
    ]
    assert api.events("u1")[-1]["reason"] == "complaint resolved"


def test_lifting_needs_a_reason_and_can_happen_once(api: Any) -> None:
    api.purpose()
    oid = api.override("u1", "granted").get_json()["id"]
    assert api.call("DELETE", f"/v1/users/u1/overrides/{oid}", role="support").status_code == 422
    ok = api.call("DELETE", f"/v1/users/u1/overrides/{oid}?reason=done+now", role="support")
    assert ok.status_code == 200
    again = api.call("DELETE", f"/v1/users/u1/overrides/{oid}?reason=done+now", role="support")
    assert again.status_code == 409


def test_override_needs_reason_and_ticket(api: Any) -> None:
    api.purpose()
    resp = api.call(
        "POST",
        "/v1/users/u1/overrides",
        role="support",
        json={"purpose": "model_training", "state": "granted"},
    )
    assert resp.status_code == 422
    assert set(resp.get_json()["errors"]) == {"reason", "ticket"}
    assert api.call("GET", "/v1/users/u1", role="support").status_code == 404


def test_a_second_active_override_is_a_conflict(api: Any) -> None:
    api.purpose()
    assert api.override("u1", "granted").status_code == 201
    assert api.override("u1", "denied").status_code == 409


def test_overrides_are_listed_newest_first_with_their_status(api: Any) -> None:
    api.purpose()
    first = api.override("u1", "granted").get_json()["id"]
    api.call("DELETE", f"/v1/users/u1/overrides/{first}?reason=mistake", role="support")
    second = api.override("u1", "denied").get_json()["id"]
    listed = api.call("GET", "/v1/users/u1/overrides", role="support").get_json()
    assert [(o["id"], o["status"]) for o in listed] == [(second, "active"), (first, "lifted")]


def test_an_override_expiry_is_judged_at_each_events_time(api: Any, clock: Clock) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    api.choose("u1", "denied")
    expires = clock.now + timedelta(hours=1)
    oid = api.override("u1", "granted", expires_at=expires.isoformat()).get_json()["id"]
    assert api.consent("u1")["basis"] == "override"

    clock.now = expires + timedelta(seconds=1)
    # No event since the override: the head answer is still judged at the last event's time.
    assert api.consent("u1")["basis"] == "override"

    api.user("someone-else", jurisdiction="US")
    decision = api.consent("u1")
    assert (decision["state"], decision["basis"]) == ("denied", "choice")
    expired = api.events("u1")[-1]
    assert (expired["kind"], expired["before"], expired["after"]) == (
        "override_expired",
        "granted",
        "denied",
    )
    assert expired["data"]["override_id"] == oid
    assert expired["actor"] == "system:expiry"
    lift = api.call("DELETE", f"/v1/users/u1/overrides/{oid}?reason=late", role="support")
    assert lift.status_code == 409


def test_expire_due_records_expiries_without_any_other_write(
    app: Flask, api: Any, clock: Clock
) -> None:
    api.purpose()
    expires = clock.now + timedelta(minutes=5)
    api.override("u1", "granted", expires_at=expires.isoformat())
    with app.app_context():
        assert overrides.expire_due(clock.now) == 0
        clock.now = expires + timedelta(seconds=1)
        assert overrides.expire_due(clock.now) == 1
        assert overrides.expire_due(clock.now) == 0
    assert api.events("u1")[-1]["kind"] == "override_expired"
    assert api.consent("u1")["basis"] == "default"


def test_an_expiry_in_the_past_or_without_a_timezone_is_refused(api: Any) -> None:
    api.purpose()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert api.override("u1", "granted", expires_at=past).status_code == 422
    naive = "2099-01-01T00:00:00"
    assert api.override("u1", "granted", expires_at=naive).status_code == 422


def test_an_override_cannot_be_lifted_through_another_users_path(api: Any) -> None:
    api.purpose()
    oid = api.override("u1", "granted").get_json()["id"]
    api.user("u2")
    resp = api.call("DELETE", f"/v1/users/u2/overrides/{oid}?reason=wrong+user", role="support")
    assert resp.status_code == 404
