"""Purposes' notices over HTTP: publishing versions (never changed once published), reading them,
and the notice version a choice was made under, through its event, decisions and history."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from service import create_app
from service.domain import events as ev
from service.runtime.extensions import db
from service.runtime.models import Choice
from service.web.console.wording import basis_words, event_words, legal_basis_words
from tests.conftest import app_config
from tests.factories import Api, assert_problem, bearer, ledger_state

PURPOSE = "model_training"
NOTICE = f"/v1/purposes/{PURPOSE}/notice"
TEXT = "We use your public posts to train our models. You can object at any time."


def publish(api: Api, version: str, text: str = TEXT, **extra: Any) -> dict[str, Any]:
    """Publish a notice version as admin."""
    resp = api.call("PUT", NOTICE, json={"version": version, "text": text, **extra})
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def head(api: Api) -> int:
    """The ledger head now."""
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


def choose(api: Api, user_id: str, state: str, **body: Any) -> Any:
    """PUT a user's choice as the app, with extra body fields; headers go in `headers`."""
    headers = body.pop("headers", {})
    return api.call(
        "PUT",
        f"/v1/users/{user_id}/consents/{PURPOSE}",
        role="app",
        json={"state": state, "source": "settings", **body},
        headers=headers,
    )


@pytest.fixture
def purpose(api: Api) -> dict[str, Any]:
    """The purpose the notices are about."""
    return api.purpose()


# --- publishing ----------------------------------------------------------------------------------


def test_a_published_notice_is_the_purposes_current_one_and_listed_with_every_version(
    api: Api, purpose: dict[str, Any]
) -> None:
    first = publish(api, "1", url="https://example.com/notices/1")
    second = publish(api, "2", "A second text.")
    assert first["version"] == "1"
    assert first["url"] == "https://example.com/notices/1"
    assert first["published_by"] == "admin-key"
    assert second["published_seq"] == first["published_seq"] + 1
    got = api.call("GET", f"/v1/purposes/{PURPOSE}", role="pipeline").get_json()
    assert got["notice"] == second
    listed = api.call("GET", "/v1/purposes", role="app").get_json()
    assert listed[0]["notice"] == second
    versions = api.call("GET", f"/v1/purposes/{PURPOSE}/notices", role="support").get_json()
    assert versions == [first, second]
    one = api.call("GET", f"/v1/purposes/{PURPOSE}/notices/1", role="pipeline").get_json()
    assert one == first


def test_publishing_is_an_event_in_the_feeds(api: Api, purpose: dict[str, Any]) -> None:
    publish(api, "v1", url="https://example.com/n")
    event = api.call("GET", "/v1/changes", role="pipeline").get_json()["events"][-1]
    assert (event["kind"], event["purpose"], event["user_id"]) == (
        "notice_published",
        PURPOSE,
        None,
    )
    assert event["data"] == {"version": "v1", "text": TEXT, "url": "https://example.com/n"}
    assert event["actor"] == "admin-key"
    audit = api.call("GET", "/v1/audit", role="admin").get_json()["events"][-1]
    assert audit == event
    only = api.call("GET", f"/v1/changes?purpose={PURPOSE}", role="pipeline").get_json()
    assert only["events"][-1] == event


def test_publishing_the_same_version_again_unchanged_writes_nothing(
    app: Flask, api: Api, purpose: dict[str, Any]
) -> None:
    first = publish(api, "1", url="https://example.com/1")
    publish(api, "2")
    before = ledger_state(app)
    again = publish(api, "1", url="https://example.com/1")
    assert again == first
    assert ledger_state(app) == before
    # Republishing an older version does not make it current again.
    current = api.call("GET", f"/v1/purposes/{PURPOSE}", role="app").get_json()["notice"]
    assert current["version"] == "2"


@pytest.mark.parametrize(
    "change", [{"text": "Another text."}, {"url": "https://example.com/2"}, {"url": None}]
)
def test_a_published_version_never_changes(
    app: Flask, api: Api, purpose: dict[str, Any], change: dict[str, Any]
) -> None:
    publish(api, "1", url="https://example.com/1")
    before = ledger_state(app)
    body = {"version": "1", "text": TEXT, "url": "https://example.com/1", **change}
    problem = assert_problem(api.call("PUT", NOTICE, json=body), 409)
    assert "never changes" in problem["detail"]
    assert ledger_state(app) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "", "text": TEXT}, "version"),
        ({"version": "v 1", "text": TEXT}, "version"),
        ({"version": "x" * 33, "text": TEXT}, "version"),
        ({"version": "1/2", "text": TEXT}, "version"),
        ({"version": 1, "text": TEXT}, "version"),
        ({"text": TEXT}, "version"),
        ({"version": "1", "text": ""}, "text"),
        ({"version": "1", "text": "  \n "}, "text"),
        ({"version": "1"}, "text"),
        ({"version": "1", "text": "a\x00b"}, "text"),
        ({"version": "1", "text": TEXT, "url": "not a url"}, "url"),
        ({"version": "1", "text": TEXT, "url": "ftp://example.com/n"}, "url"),
        ({"version": "1", "text": TEXT, "url": "https://" + "a" * 2000 + ".com"}, "url"),
        ({"version": "1", "text": TEXT, "extra": 1}, "extra"),
    ],
)
def test_a_bad_notice_is_a_precise_422_and_writes_nothing(
    app: Flask, api: Api, purpose: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    before = ledger_state(app)
    problem = assert_problem(api.call("PUT", NOTICE, json=body), 422)
    assert list(problem["errors"]) == [field]
    assert ledger_state(app) == before


def test_notices_of_an_unknown_purpose_or_version_are_404(
    app: Flask, api: Api, purpose: dict[str, Any]
) -> None:
    before = ledger_state(app)
    resp = api.call("PUT", "/v1/purposes/no_such/notice", json={"version": "1", "text": TEXT})
    assert_problem(resp, 404)
    assert ledger_state(app) == before
    assert_problem(api.call("GET", "/v1/purposes/no_such/notices", role="app"), 404)
    assert_problem(api.call("GET", f"/v1/purposes/{PURPOSE}/notices/9", role="app"), 404)
    assert_problem(api.call("GET", f"/v1/purposes/{PURPOSE}/notices/a%20b", role="app"), 422)


@pytest.mark.parametrize("role", ["app", "pipeline", "support"])
def test_only_admins_publish_notices(api: Api, purpose: dict[str, Any], role: str) -> None:
    resp = api.call("PUT", NOTICE, role=role, json={"version": "1", "text": TEXT})
    assert_problem(resp, 403)
    assert api.call("GET", f"/v1/purposes/{PURPOSE}/notices", role=role).get_json() == []


# --- the notice a choice was made under ----------------------------------------------------------


def test_a_notice_version_travels_from_the_choice_to_its_event_decisions_and_history(
    app: Flask, api: Api, purpose: dict[str, Any]
) -> None:
    publish(api, "1")
    resp = choose(api, "u1", "granted", notice_version="1")
    assert resp.status_code == 200, resp.get_json()
    decision = resp.get_json()
    assert (decision["basis"], decision["notice_version"]) == ("choice", "1")
    with app.app_context():
        row = db.session.get(Choice, ("u1", PURPOSE))
        assert row is not None
        assert row.notice_version == "1"
    event = api.events("u1")[-1]
    assert event["kind"] == "choice_set"
    assert event["data"]["notice_version"] == "1"
    assert api.consent("u1")["notice_version"] == "1"
    subject = api.call("GET", "/v1/users/u1", role="app").get_json()
    assert subject["consents"][0]["notice_version"] == "1"
    lookup = api.call("GET", f"/v1/lookup/{PURPOSE}/u1", role="pipeline").get_json()
    assert (lookup["basis"], lookup["notice_version"]) == ("choice", "1")
    changes = api.call("GET", f"/v1/changes?purpose={PURPOSE}", role="pipeline").get_json()
    assert changes["events"][-1]["data"]["notice_version"] == "1"


def test_a_choice_without_a_notice_version_says_none_and_writes_the_event_as_before(
    api: Api, purpose: dict[str, Any]
) -> None:
    publish(api, "1")
    choose(api, "u1", "granted", notice_version="1")
    resp = choose(api, "u1", "denied", notice_version=None)
    assert resp.status_code == 200
    assert resp.get_json()["notice_version"] is None
    assert "notice_version" not in api.events("u1")[-1]["data"]
    lookup = api.call("GET", f"/v1/lookup/{PURPOSE}/u1", role="pipeline").get_json()
    assert lookup["notice_version"] is None


def test_the_notice_version_is_answered_as_of_a_seq_from_memory_and_database_alike(
    app: Flask, database_url: str, api: Api, purpose: dict[str, Any]
) -> None:
    publish(api, "1")
    publish(api, "2")
    api.call("GET", f"/v1/lookup/{PURPOSE}/u1", role="pipeline")  # builds the index
    choose(api, "u1", "granted", notice_version="1")
    choose(api, "u2", "granted", notice_version="2")
    first = head(api)
    choose(api, "u1", "granted", notice_version="2")
    api.override("u2", "granted")
    expected = {
        first: [("choice", "1"), ("choice", "2")],
        head(api): [("choice", "2"), ("override", None)],
    }
    other = create_app({**app_config(database_url), "CONSENT_INDEX": "off"})
    try:
        token = api.tokens["pipeline"]
        for client in (api.client, other.test_client()):
            for seq, answers in expected.items():
                got = []
                for user_id in ("u1", "u2"):
                    path = f"/v1/lookup/{PURPOSE}/{user_id}?as_of={seq}"
                    body = client.get(path, headers=bearer(token)).get_json()
                    got.append((body["basis"], body["notice_version"]))
                assert got == answers, (client, seq)
    finally:
        with other.app_context():
            db.engine.dispose()


def test_the_index_built_from_the_tables_holds_the_notice_versions(
    database_url: str, api: Api, purpose: dict[str, Any]
) -> None:
    publish(api, "1")
    choose(api, "u1", "granted", notice_version="1")
    choose(api, "u2", "granted")
    other = create_app(app_config(database_url))  # a fresh worker: its index is built now
    try:
        client = other.test_client()
        token = api.tokens["pipeline"]
        answers = [
            client.get(f"/v1/lookup/{PURPOSE}/{u}", headers=bearer(token)).get_json()
            for u in ("u1", "u2")
        ]
        assert [a["notice_version"] for a in answers] == ["1", None]
    finally:
        with other.app_context():
            db.engine.dispose()


@pytest.mark.parametrize(
    ("notice_version", "message"),
    [("9", "has not been published"), ("v 1", "Must be"), ("x" * 33, "Must be"), (7, "string")],
)
def test_a_notice_version_that_does_not_exist_is_a_422_naming_it_and_writes_nothing(
    app: Flask, api: Api, purpose: dict[str, Any], notice_version: Any, message: str
) -> None:
    publish(api, "1")
    before = ledger_state(app)
    resp = choose(api, "newcomer", "granted", notice_version=notice_version)
    problem = assert_problem(resp, 422)
    assert list(problem["errors"]) == ["notice_version"]
    assert message in str(problem)
    assert ledger_state(app) == before  # not even registered


def test_a_notice_version_of_another_purpose_is_refused(app: Flask, api: Api) -> None:
    api.purpose()
    api.purpose(key="ads_ranking")
    api.call("PUT", "/v1/purposes/ads_ranking/notice", json={"version": "1", "text": TEXT})
    before = ledger_state(app)
    problem = assert_problem(choose(api, "u1", "granted", notice_version="1"), 422)
    assert "model_training" in problem["detail"]
    assert ledger_state(app) == before


def test_idempotency_and_if_match_work_as_before_with_a_notice_version(
    app: Flask, api: Api, purpose: dict[str, Any]
) -> None:
    publish(api, "1")
    publish(api, "2")
    key = {"Idempotency-Key": "k-1"}
    first = choose(api, "u1", "granted", notice_version="1", headers=key)
    state = ledger_state(app)
    again = choose(api, "u1", "granted", notice_version="1", headers=key)
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    assert ledger_state(app) == state
    other = choose(api, "u1", "granted", notice_version="2", headers=key)
    assert list(assert_problem(other, 422)["errors"]) == ["Idempotency-Key"]
    stale = choose(api, "u1", "denied", notice_version="2", headers={"If-Match": '"0"'})
    assert_problem(stale, 412)
    assert ledger_state(app) == state
    fresh = choose(api, "u1", "denied", notice_version="2", headers={"If-Match": '"1"'})
    assert (fresh.status_code, fresh.get_json()["notice_version"]) == (200, "2")


def test_a_null_notice_version_fingerprints_like_none_at_all(
    api: Api, purpose: dict[str, Any]
) -> None:
    key = {"Idempotency-Key": "k-2"}
    first = choose(api, "u1", "granted", headers=key)
    again = choose(api, "u1", "granted", notice_version=None, headers=key)
    assert (again.status_code, again.get_json()) == (200, first.get_json())


# --- words for people ---------------------------------------------------------------------------


def test_the_console_says_which_notice_a_choice_was_made_under() -> None:
    choice = ev.ChoiceSet(
        user_id="u1",
        purpose=PURPOSE,
        state="granted",
        previous=None,
        source="settings",
        version=2,
        notice_version="3",
    )
    assert event_words(choice) == "User's choice: granted (source settings, version 2, notice 3)"
    published = ev.NoticePublished(purpose=PURPOSE, version="3", text=TEXT)
    assert event_words(published) == f"Notice 3 of {PURPOSE} published"
    decision = {"state": "granted", "basis": "choice", "source": "settings", "notice_version": "3"}
    assert basis_words(decision) == "Granted — user's choice (settings, notice 3)"
    assert basis_words({"state": "denied", "basis": "not_offered"}) == (
        "Denied — purpose not offered in the user's jurisdiction"
    )
    assert legal_basis_words("legitimate_interest").startswith("Legitimate interest")
    assert legal_basis_words(None) == "Consent"
