"""Purposes' legal bases over HTTP: stored and validated like defaults, changed as policy
changes, and not_offered and legal_basis in every read, from memory and from the database alike,
at the head and as of earlier seqs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.reads import impact
from service.runtime.extensions import db
from tests.conftest import app_config
from tests.factories import Api, assert_problem, bearer, ledger_state

PURPOSE = "model_training"
ITEM = f"/v1/purposes/{PURPOSE}"


def head(api: Api) -> int:
    """The ledger head now."""
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


def lookup(api: Api, user_id: str, as_of: int | None = None) -> dict[str, Any]:
    """One pipeline decision."""
    query = {} if as_of is None else {"as_of": str(as_of)}
    resp = api.call("GET", f"/v1/lookup/{PURPOSE}/{user_id}", role="pipeline", query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def patch(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """PATCH the purpose as admin."""
    resp = api.call("PATCH", ITEM, json=body)
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


@pytest.fixture
def database(app: Flask, database_url: str) -> Iterator[FlaskClient]:
    """A second app on the same database that answers every read from the database."""
    other = create_app({**app_config(database_url), "CONSENT_INDEX": "off"})
    yield other.test_client()
    with other.app_context():
        db.engine.dispose()


# --- the purpose document ---------------------------------------------------------------------


def test_a_purpose_without_legal_bases_has_an_empty_map_and_consent_everywhere(api: Api) -> None:
    created = api.purpose()
    assert created["legal_bases"] == {}
    assert created["notice"] is None
    api.user("u1", jurisdiction="DE")
    assert lookup(api, "u1")["legal_basis"] == "consent"
    assert lookup(api, "never-seen")["legal_basis"] == "consent"


def test_legal_bases_are_stored_normalised_and_shown_everywhere(api: Api) -> None:
    created = api.purpose(legal_bases={"eea": "not_offered", "*": "legitimate_interest"})
    assert created["legal_bases"] == {"EEA": "not_offered", "*": "legitimate_interest"}
    got = api.call("GET", ITEM, role="pipeline").get_json()
    listed = api.call("GET", "/v1/purposes", role="app").get_json()
    assert got["legal_bases"] == listed[0]["legal_bases"] == created["legal_bases"]


@pytest.mark.parametrize(
    ("legal_bases", "field"),
    [
        ({"ZZ": "consent"}, "legal_bases.ZZ"),
        ({"EU": "consent"}, "legal_bases.EU"),
        ({"DE": "consent", "de": "not_offered"}, "legal_bases.de"),
    ],
)
def test_a_bad_selector_in_legal_bases_is_a_precise_422_and_writes_nothing(
    app: Flask, api: Api, legal_bases: dict[str, str], field: str
) -> None:
    api.purpose()
    before = ledger_state(app)
    body = {"key": "other", "title": "Other", "defaults": {"*": "denied"}}
    created = api.call("POST", "/v1/purposes", json={**body, "legal_bases": legal_bases})
    assert list(assert_problem(created, 422)["errors"]) == [field]
    patched = api.call("PATCH", ITEM, json={"legal_bases": legal_bases})
    assert list(assert_problem(patched, 422)["errors"]) == [field]
    assert ledger_state(app) == before


@pytest.mark.parametrize("value", ["granted", "opt_out", "", 3, None])
def test_an_unknown_legal_basis_is_a_422_naming_the_field_and_writes_nothing(
    app: Flask, api: Api, value: Any
) -> None:
    api.purpose()
    before = ledger_state(app)
    resp = api.call("PATCH", ITEM, json={"legal_bases": {"DE": value}})
    problem = assert_problem(resp, 422)
    assert "legal_bases" in problem["errors"]
    assert "legal_bases" in problem["detail"]
    assert ledger_state(app) == before


def test_a_change_of_legal_bases_is_a_policy_change_with_before_and_after(api: Api) -> None:
    api.purpose(legal_bases={"*": "consent"})
    after = patch(api, {"legal_bases": {"EEA": "not_offered"}})
    assert after["legal_bases"] == {"EEA": "not_offered"}
    assert after["version"] == 2
    last = api.call("GET", "/v1/changes", role="pipeline").get_json()["events"][-1]
    assert last["kind"] == "policy_changed"
    assert last["purpose"] == PURPOSE
    assert last["data"]["before"] == {"legal_bases": {"*": "consent"}}
    assert last["data"]["after"] == {"legal_bases": {"EEA": "not_offered"}}
    assert last["data"]["legal_bases"] == {"EEA": "not_offered"}
    audit = api.call("GET", "/v1/audit").get_json()["events"][-1]
    assert audit == last
    unchanged = head(api)
    patch(api, {"legal_bases": {"eea": "not_offered"}})  # the same, normalised: no change
    assert head(api) == unchanged


# --- resolution -------------------------------------------------------------------------------


def test_not_offered_denies_a_users_grant_and_still_records_their_choice(api: Api) -> None:
    api.purpose(defaults={"*": "granted"}, legal_bases={"EEA": "not_offered"})
    api.user("fr", jurisdiction="FR")
    resp = api.choose("fr", "granted")
    assert resp.status_code == 200
    decision = resp.get_json()
    assert (decision["state"], decision["basis"], decision["legal_basis"]) == (
        "denied",
        "not_offered",
        "not_offered",
    )
    assert (decision["choice"], decision["version"]) == ("granted", 1)
    event = api.events("fr")[-1]
    assert (event["kind"], event["before"], event["after"]) == ("choice_set", "denied", "denied")
    # Offered again: the choice recorded meanwhile decides.
    patch(api, {"legal_bases": {}})
    assert (api.consent("fr")["basis"], api.consent("fr")["state"]) == ("choice", "granted")


def test_not_offered_beats_an_override_but_not_erasure(api: Api) -> None:
    api.purpose(legal_bases={"FR": "not_offered"})
    api.user("fr", jurisdiction="FR")
    api.user("gone", jurisdiction="FR")
    assert api.override("fr", "granted").status_code == 201
    api.call("DELETE", "/v1/users/gone", role="app")
    assert lookup(api, "fr")["basis"] == "not_offered"
    gone = lookup(api, "gone")
    assert (gone["basis"], gone["legal_basis"]) == ("erased", "not_offered")


def test_never_seen_ids_are_not_offered_under_a_wildcard_only(api: Api) -> None:
    api.purpose(unknown_subject="granted", legal_bases={"EEA": "not_offered"})
    assert lookup(api, "never-seen")["basis"] == "unknown"
    patch(api, {"legal_bases": {"*": "not_offered", "US": "consent"}})
    never = lookup(api, "never-seen")
    assert (never["allowed"], never["basis"], never["legal_basis"]) == (
        False,
        "not_offered",
        "not_offered",
    )
    api.user("us", jurisdiction="US")
    assert lookup(api, "us")["basis"] == "default"


def test_every_decision_about_a_user_carries_its_legal_basis(api: Api) -> None:
    api.purpose(legal_bases={"DE": "legitimate_interest", "EEA": "not_offered"})
    api.purpose(key="ads_ranking")
    api.user("de", jurisdiction="DE")
    subject = api.call("GET", "/v1/users/de", role="support").get_json()
    assert {d["purpose"]: d["legal_basis"] for d in subject["consents"]} == {
        "ads_ranking": "consent",
        PURPOSE: "legitimate_interest",
    }
    every = api.call("GET", "/v1/users/de/consents", role="app").get_json()
    assert [d["legal_basis"] for d in every] == ["consent", "legitimate_interest"]
    assert api.consent("de")["legal_basis"] == "legitimate_interest"


def test_answers_as_of_a_seq_before_a_change_of_legal_bases_are_those_of_then(
    api: Api, database: FlaskClient
) -> None:
    api.purpose(defaults={"*": "granted"})
    api.user("fr", jurisdiction="FR")
    api.user("us", jurisdiction="US")
    api.choose("fr", "granted")
    lookup(api, "fr")  # builds the index: what follows reaches it as events
    before = head(api)
    patch(api, {"legal_bases": {"EEA": "not_offered", "*": "legitimate_interest"}})
    changed = head(api)
    api.call("PUT", "/v1/users/fr", role="app", json={"jurisdiction": "US"})  # moves after it

    def answers(get: Any, seq: int) -> list[tuple[str, str]]:
        out = []
        for user_id in ("fr", "us", "never-seen"):
            resp = get(f"/v1/lookup/{PURPOSE}/{user_id}?as_of={seq}")
            assert resp.status_code == 200, resp.get_json()
            out.append((resp.get_json()["basis"], resp.get_json()["legal_basis"]))
        return out

    token = api.tokens["pipeline"]
    from_memory = lambda path: api.call("GET", path, role="pipeline")  # noqa: E731
    from_database = lambda path: database.get(path, headers=bearer(token))  # noqa: E731
    for get in (from_memory, from_database):
        assert answers(get, before) == [
            ("choice", "consent"),
            ("default", "consent"),
            ("unknown", "consent"),
        ]
        assert answers(get, changed) == [
            ("not_offered", "not_offered"),
            ("default", "legitimate_interest"),
            ("unknown", "legitimate_interest"),
        ]
        assert answers(get, head(api)) == [
            ("choice", "legitimate_interest"),
            ("default", "legitimate_interest"),
            ("unknown", "legitimate_interest"),
        ]


def test_batch_filter_and_snapshot_deny_not_offered_subjects_from_memory_and_database_alike(
    api: Api, database: FlaskClient
) -> None:
    api.purpose(defaults={"*": "granted"}, unknown_subject="granted")
    for user_id, jurisdiction in (("fr", "FR"), ("de", "DE"), ("us", "US"), ("none", None)):
        api.user(user_id, jurisdiction=jurisdiction)
    api.choose("de", "granted")
    lookup(api, "de")  # builds the index: what follows reaches it as events
    before = head(api)
    patch(api, {"legal_bases": {"EEA": "not_offered"}})
    api.user("late", jurisdiction="FR")  # registered after the change
    probe = ["fr", "de", "us", "none", "late", "never-seen"]
    token = api.tokens["pipeline"]

    def reads(client: FlaskClient, as_of: int) -> tuple[list[str], list[str], dict[str, str]]:
        headers = bearer(token)
        batch = client.post(
            f"/v1/lookup/{PURPOSE}", json={"user_ids": probe, "as_of": as_of}, headers=headers
        ).get_json()
        filtered = client.post(
            f"/v1/filter/{PURPOSE}?as_of={as_of}",
            data="\n".join(probe).encode(),
            headers={**headers, "Content-Type": "text/plain"},
        )
        assert filtered.status_code == 200
        assert batch["allowed"] == filtered.get_data(as_text=True).split()
        snap = client.get(
            f"/v1/snapshots/{PURPOSE}?set=denied&format=csv&as_of={as_of}", headers=headers
        )
        assert snap.status_code == 200
        denied = dict(list(csv.reader(io.StringIO(snap.get_data(as_text=True))))[1:])
        return batch["allowed"], batch["denied"], denied

    now = head(api)
    for client in (api.client, database):
        assert reads(client, now) == (
            ["us", "none", "never-seen"],
            ["fr", "de", "late"],
            {"de": "not_offered", "fr": "not_offered", "late": "not_offered"},
        )
        assert reads(client, before) == (probe, [], {})


def test_a_snapshot_as_of_before_a_wildcard_not_offered_leaves_out_later_subjects(
    api: Api,
) -> None:
    api.purpose(legal_bases={"*": "not_offered"})
    lookup(api, "a")  # builds the index: what follows reaches it as events
    api.user("a", jurisdiction="US")
    before = head(api)
    api.user("b", jurisdiction="US")  # not a subject as of `before`, nor in its snapshot
    resp = api.call(
        "GET",
        f"/v1/snapshots/{PURPOSE}?set=denied&format=ndjson&as_of={before}",
        role="pipeline",
    )
    assert resp.status_code == 200
    assert resp.get_data(as_text=True).splitlines() == ['{"user_id":"a","basis":"not_offered"}']


# --- what a change of legal bases does to others ----------------------------------------------


def test_the_impact_preview_counts_choices_and_overrides_that_not_offered_overrules(
    app: Flask, api: Api
) -> None:
    api.purpose(defaults={"*": "granted"})
    for user_id, jurisdiction in (("fr1", "FR"), ("fr2", "FR"), ("fr3", "FR"), ("us", "US")):
        api.user(user_id, jurisdiction=jurisdiction)
    api.user("fr4", jurisdiction="FR")
    api.choose("fr1", "granted")
    api.choose("fr2", "denied")  # denied already: no change
    api.override("fr3", "granted")
    api.call("DELETE", "/v1/users/fr4", role="app")  # erased: no change
    with app.app_context():
        withdrawn = impact.default_change(PURPOSE, {"*": "granted"}, {"EEA": "not_offered"})
        defaults_only = impact.default_change(PURPOSE, {"*": "denied"})
    assert withdrawn == {
        "purpose": PURPOSE,
        "on_default": 1,
        "with_own_state": 3,
        "to_granted": 0,
        "to_denied": 2,
        "changed": 2,
        "under_restriction": 0,
    }
    assert (defaults_only["changed"], defaults_only["with_own_state"]) == (1, 0)
    patch(api, {"legal_bases": {"EEA": "not_offered"}})
    with app.app_context():
        offered_again = impact.default_change(PURPOSE, {"*": "granted"}, {})
        unchanged = impact.default_change(PURPOSE, {"*": "granted"})
    assert (offered_again["to_granted"], offered_again["changed"]) == (2, 2)
    assert unchanged["changed"] == 0


def test_withdrawing_a_purpose_from_a_jurisdiction_is_the_event_that_affected_run_members(
    api: Api,
) -> None:
    api.purpose(defaults={"*": "granted"})
    api.user("fr", jurisdiction="FR")
    api.user("us", jurisdiction="US")
    api.choose("fr", "granted")
    run = api.call(
        "POST",
        "/v1/runs",
        role="pipeline",
        json={"name": "run-1", "purpose": PURPOSE, "as_of": head(api)},
    ).get_json()
    members = api.call(
        "PUT",
        f"/v1/runs/{run['id']}/members",
        role="pipeline",
        data=b"fr\nus\n",
        headers={"Content-Type": "text/plain"},
    )
    assert members.status_code == 201, members.get_json()
    patch(api, {"legal_bases": {"EEA": "not_offered"}})
    resp = api.call("GET", f"/v1/runs/{run['id']}/affected?format=ndjson", role="support")
    assert resp.status_code == 200
    assert [json.loads(line) for line in resp.get_data(as_text=True).splitlines()] == [
        {"user_id": "fr", "basis": "not_offered", "seq": head(api)}
    ]
