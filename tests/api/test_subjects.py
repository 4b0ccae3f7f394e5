"""Subjects over HTTP: registration, jurisdiction changes, erasure."""

from __future__ import annotations

from typing import Any


def test_registering_writes_one_event_per_purpose_with_effective_states(api: Any) -> None:
    api.purpose()
    api.purpose(key="ads_personalisation", defaults={"*": "denied"}, unknown_subject="granted")
    api.user("u1", jurisdiction="US")
    events = api.events("u1")
    assert {(e["purpose"], e["before"], e["after"]) for e in events} == {
        ("model_training", "denied", "granted"),
        ("ads_personalisation", "granted", "denied"),
    }
    assert all(e["kind"] == "subject_registered" for e in events)


def test_registering_before_any_purpose_exists_still_records_an_event(api: Any) -> None:
    body = api.user("early", jurisdiction=None)
    assert body["consents"] == []
    events = api.events("early")
    assert [(e["kind"], e["purpose"]) for e in events] == [("subject_registered", None)]


def test_putting_the_same_jurisdiction_again_writes_nothing(api: Any) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    api.user("u1", jurisdiction="US")
    assert len(api.events("u1")) == 1


def test_changing_jurisdiction_moves_the_default_and_records_it(api: Any) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    body = api.user("u1", jurisdiction="NO")
    assert body["jurisdiction"] == "NO"
    assert body["consents"][0]["state"] == "denied"
    last = api.events("u1")[-1]
    assert last["kind"] == "jurisdiction_changed"
    assert (last["before"], last["after"]) == ("granted", "denied")
    assert last["data"] == {"from": "US", "to": "NO"}


def test_a_country_default_beats_the_region_group(api: Any) -> None:
    api.purpose(defaults={"EEA": "denied", "IE": "granted", "*": "denied"})
    api.user("ie1", jurisdiction="IE")
    decision = api.consent("ie1")
    assert (decision["state"], decision["default_selector"]) == ("granted", "IE")


def test_erasing_denies_every_purpose_and_keeps_the_history(api: Any) -> None:
    api.purpose()
    api.purpose(key="ads_personalisation", defaults={"*": "granted"})
    api.user("u1", jurisdiction="US")
    api.choose("u1", "granted")
    resp = api.call("DELETE", "/v1/users/u1", role="app")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["erased"] is True
    assert {(d["state"], d["basis"]) for d in body["consents"]} == {("denied", "erased")}
    kinds = [e["kind"] for e in api.events("u1")]
    assert kinds.count("subject_erased") == 2
    assert kinds[0] == "subject_registered"


def test_erasing_twice_writes_nothing_more(api: Any) -> None:
    api.purpose()
    api.call("DELETE", "/v1/users/u1", role="app")
    before = len(api.events("u1"))
    assert api.call("DELETE", "/v1/users/u1", role="app").status_code == 200
    assert len(api.events("u1")) == before


def test_erasing_an_unknown_id_records_it_erased_even_under_a_permissive_unknown_policy(
    api: Any,
) -> None:
    api.purpose(unknown_subject="granted")
    api.call("DELETE", "/v1/users/gone", role="app")
    decision = api.consent("gone")
    assert (decision["allowed"], decision["basis"]) == (False, "erased")


def test_an_erased_user_cannot_be_registered_again_or_moved(api: Any) -> None:
    api.purpose()
    api.call("DELETE", "/v1/users/u1", role="app")
    resp = api.call("PUT", "/v1/users/u1", role="app", json={"jurisdiction": "US"})
    assert resp.status_code == 409
    assert api.override("u1", "granted").status_code == 409


def test_an_unknown_user_is_404_everywhere_it_is_read(api: Any) -> None:
    api.purpose()
    for path in ("", "/consents", "/consents/model_training", "/events", "/overrides"):
        resp = api.call("GET", f"/v1/users/nobody{path}", role="support")
        assert resp.status_code == 404, path
        assert resp.mimetype == "application/problem+json"


def test_history_pages_by_seq_oldest_first(api: Any) -> None:
    api.purpose()
    for state in ("granted", "denied", "granted", "denied"):
        api.choose("u1", state)
    page = api.call("GET", "/v1/users/u1/events?limit=2", role="app").get_json()
    assert page["has_more"] is True
    assert len(page["events"]) == 2
    rest = api.call("GET", f"/v1/users/u1/events?after={page['next_after']}", role="app").get_json()
    seqs = [e["seq"] for e in page["events"] + rest["events"]]
    assert seqs == sorted(seqs)
    assert len(seqs) == 5
    assert rest["has_more"] is False
