"""Users' choices over HTTP: versions and ETags, If-Match, Idempotency-Key, auto-registration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.web.schemas import DecisionSchema


def test_setting_a_choice_registers_an_unknown_user_and_returns_version_and_etag(api: Any) -> None:
    api.purpose()
    resp = api.choose("new-user", "granted")
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["state"], body["basis"], body["version"]) == ("granted", "choice", 1)
    assert resp.headers["ETag"] == '"1"'
    assert [e["kind"] for e in api.events("new-user")] == ["subject_registered", "choice_set"]


def test_each_choice_bumps_the_version_and_records_before_and_after(api: Any) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    api.choose("u1", "denied")
    resp = api.choose("u1", "granted")
    assert resp.get_json()["version"] == 2
    events = api.events("u1")
    assert [(e["kind"], e["before"], e["after"]) for e in events] == [
        ("subject_registered", "denied", "granted"),
        ("choice_set", "granted", "denied"),
        ("choice_set", "denied", "granted"),
    ]
    assert events[-1]["data"]["version"] == 2
    assert events[-1]["data"]["source"] == "settings"


def test_if_match_with_the_current_version_succeeds_and_a_stale_one_is_412(api: Any) -> None:
    api.purpose()
    first = api.choose("u1", "granted", **{"If-Match": '"0"'})
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert api.choose("u1", "denied", **{"If-Match": etag}).status_code == 200
    stale = api.choose("u1", "granted", **{"If-Match": etag})
    assert stale.status_code == 412
    assert stale.mimetype == "application/problem+json"
    assert "version 2" in stale.get_json()["detail"]
    assert api.consent("u1")["state"] == "denied"
    assert len(api.events("u1")) == 3


def test_get_consent_gives_the_etag_that_if_match_accepts(api: Any) -> None:
    api.purpose()
    api.choose("u1", "granted")
    resp = api.call("GET", "/v1/users/u1/consents/model_training", role="app")
    assert resp.headers["ETag"] == '"1"'
    assert api.choose("u1", "denied", **{"If-Match": resp.headers["ETag"]}).status_code == 200


def test_a_retry_with_the_same_idempotency_key_returns_the_first_answer_and_writes_nothing(
    api: Any,
) -> None:
    api.purpose()
    first = api.choose("u1", "granted", **{"Idempotency-Key": "k-1"})
    again = api.choose("u1", "granted", **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert first.get_json() == again.get_json()
    assert first.headers["ETag"] == again.headers["ETag"]
    assert len(api.events("u1")) == 2


def test_an_idempotency_key_reused_with_a_different_body_is_422_and_writes_nothing(
    api: Any,
) -> None:
    api.purpose()
    api.choose("u1", "granted", **{"Idempotency-Key": "k-1"})
    resp = api.choose("u1", "denied", **{"Idempotency-Key": "k-1"})
    assert resp.status_code == 422
    assert "Idempotency-Key" in resp.get_json()["errors"]
    assert api.consent("u1")["state"] == "granted"
    assert len(api.events("u1")) == 2


def test_idempotency_keys_belong_to_the_api_key_that_sent_them(api: Any) -> None:
    api.purpose()
    api.choose("u1", "granted", **{"Idempotency-Key": "shared"})
    resp = api.call(
        "PUT",
        "/v1/users/u1/consents/model_training",
        role="admin",
        json={"state": "denied"},
        headers={"Idempotency-Key": "shared"},
    )
    assert resp.status_code == 200
    assert api.consent("u1")["state"] == "denied"


def test_a_choice_for_an_unknown_purpose_is_404_and_registers_nobody(api: Any) -> None:
    api.purpose()
    resp = api.choose("ghost", "granted", purpose="no_such_purpose")
    assert resp.status_code == 404
    assert api.call("GET", "/v1/users/ghost", role="app").status_code == 404


def test_an_erased_user_cannot_choose_again(api: Any) -> None:
    api.purpose()
    api.choose("u1", "granted")
    api.call("DELETE", "/v1/users/u1", role="app")
    resp = api.choose("u1", "granted")
    assert resp.status_code == 409
    assert api.consent("u1")["basis"] == "erased"


def test_source_defaults_to_api_and_is_validated(api: Any) -> None:
    api.purpose()
    resp = api.call(
        "PUT", "/v1/users/u1/consents/model_training", role="app", json={"state": "granted"}
    )
    assert resp.get_json()["source"] == "api"
    bad = api.call(
        "PUT",
        "/v1/users/u1/consents/model_training",
        role="app",
        json={"state": "granted", "source": "Not A Source!"},
    )
    assert bad.status_code == 422
    assert "source" in bad.get_json()["errors"]


def test_reading_all_consents_lists_every_purpose(api: Any) -> None:
    api.purpose()
    api.purpose(key="ads_personalisation", defaults={"*": "denied"})
    api.user("u1", jurisdiction="US")
    resp = api.call("GET", "/v1/users/u1/consents", role="support")
    by_purpose = {d["purpose"]: d["state"] for d in resp.get_json()}
    assert by_purpose == {"model_training": "granted", "ads_personalisation": "denied"}


def test_a_write_answers_exactly_what_its_documented_schema_would_give(api: Any) -> None:
    api.purpose()
    plain = api.choose("u1", "granted").get_json()
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.override("u2", "denied", expires_at=expires).status_code == 201
    overridden = api.choose("u2", "granted").get_json()
    assert overridden["override"] is not None
    for answer in (plain, overridden):
        assert DecisionSchema().dump(answer) == answer
