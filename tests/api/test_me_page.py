"""The /me page over the Flask test client: token exchange, its session, switches, CSRF, GPC,
and its languages."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.web import usertokens
from tests.conftest import USER_TOKEN_SECRET
from tests.factories import Api, bearer, ledger_state, user_token

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def world(api: Api) -> Api:
    """Model training (off by default in the EEA) and ads (on, honouring GPC); alice in Germany."""
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
    return api


def open_page(client: FlaskClient, user: str = "alice", **headers: str) -> Any:
    """Follow a product's link with a fresh token: the exchange, then the page it leads to."""
    exchanged = client.get(f"/me?token={user_token(user)}", headers=headers)
    assert exchanged.status_code == 303, exchanged.get_data(as_text=True)
    assert exchanged.headers["Location"] == "/me"
    return client.get("/me", headers=headers)


def csrf(page: Any) -> str:
    found = CSRF_RE.search(page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def switch(client: FlaskClient, purpose: str, state: str, token: str) -> Any:
    return client.post(f"/me/consents/{purpose}", data={"csrf_token": token, "state": state})


def test_a_product_link_opens_a_strict_session_cookie_and_drops_the_token(world: Api) -> None:
    client = world.app.test_client()
    exchanged = client.get(f"/me?token={user_token('alice')}")
    assert (exchanged.status_code, exchanged.headers["Location"]) == (303, "/me")
    cookie = exchanged.headers["Set-Cookie"]
    assert cookie.startswith("consent_me=")
    for rule in ("HttpOnly", "Path=/me", "SameSite=Strict"):
        assert rule in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 3500 < max_age <= 3600
    assert exchanged.headers["Referrer-Policy"] == "no-referrer"
    page = client.get("/me")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Model Training" in body
    assert "Off — the default in your region (EEA)" in body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script" not in body


def test_a_link_followed_from_another_site_moves_on_by_a_page_of_our_own(world: Api) -> None:
    client = world.app.test_client()
    resp = client.get(f"/me?token={user_token('alice')}", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=/me">' in resp.get_data(as_text=True)
    assert client.get("/me").status_code == 200


def test_a_token_is_single_use_on_the_page(world: Api) -> None:
    token = user_token("alice")
    assert world.app.test_client().get(f"/me?token={token}").status_code == 303
    again = world.app.test_client().get(f"/me?token={token}")
    assert again.status_code == 401
    assert "used already" in again.get_data(as_text=True)
    assert "consent_me=" not in again.headers.get("Set-Cookie", "")


def test_a_token_is_refused_after_sign_out_too(world: Api) -> None:
    client = world.app.test_client()
    token = user_token("alice")
    client.get(f"/me?token={token}")
    page = client.get("/me")
    out = client.post("/me/sign-out", data={"csrf_token": csrf(page)})
    assert out.status_code == 200
    assert client.get("/me").status_code == 401
    assert client.get(f"/me?token={token}").status_code == 401


def test_an_expired_or_foreign_token_opens_nothing(world: Api) -> None:
    client = world.app.test_client()
    expired = usertokens.mint("alice", USER_TOKEN_SECRET.encode(), minutes=1, now=time.time() - 600)
    assert client.get(f"/me?token={expired}").status_code == 401
    forged = usertokens.mint("alice", b"another secret of at least 32 bytes!!", minutes=5)
    assert client.get(f"/me?token={forged}").status_code == 401
    assert client.get("/me").status_code == 401


def test_switching_a_purpose_records_the_users_own_choice(world: Api) -> None:
    client = world.app.test_client()
    page = open_page(client)
    resp = switch(client, "model_training", "granted", csrf(page))
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/me#purpose-model_training"
    events = world.call("GET", "/v1/users/alice/events", role="support").get_json()["events"]
    last = events[-1]
    assert (last["kind"], last["purpose"], last["after"], last["actor"], last["role"]) == (
        "choice_set",
        "model_training",
        "granted",
        "user:alice",
        "user",
    )
    assert last["data"]["source"] == "self_service"
    body = client.get("/me").get_data(as_text=True)
    assert "On — you turned it on" in body
    assert "You turned Model Training On." in body


def test_a_forged_or_missing_csrf_token_changes_nothing(world: Api) -> None:
    client = world.app.test_client()
    open_page(client)
    before = ledger_state(world.app)
    assert switch(client, "model_training", "granted", "forged").status_code == 400
    missing = client.post("/me/consents/model_training", data={"state": "granted"})
    assert missing.status_code == 400
    assert ledger_state(world.app) == before


def test_a_session_acts_for_its_own_user_whatever_token_comes_with_a_form(world: Api) -> None:
    alice = world.app.test_client()
    page = open_page(alice)
    resp = alice.post(
        f"/me/consents/model_training?token={user_token('bob')}",
        data={"csrf_token": csrf(page), "state": "granted"},
        headers={"Authorization": f"Bearer {user_token('bob')}"},
    )
    assert resp.status_code == 303
    bob = world.call("GET", "/v1/users/bob", role="support")
    assert bob.status_code == 404
    alice_doc = world.call("GET", "/v1/users/alice", role="support").get_json()
    [training] = [c for c in alice_doc["consents"] if c["purpose"] == "model_training"]
    assert training["choice"] == "granted"


def test_a_new_token_for_another_user_replaces_the_session(world: Api) -> None:
    client = world.app.test_client()
    open_page(client, "alice")
    page = open_page(client, "bob")
    assert client.get_cookie("consent_me", path="/me") is not None
    switch(client, "model_training", "granted", csrf(page))
    alice_doc = world.call("GET", "/v1/users/alice", role="support").get_json()
    assert all(c["choice"] is None for c in alice_doc["consents"])


def test_an_erased_user_sees_their_record_without_switches_and_cannot_write(world: Api) -> None:
    client = world.app.test_client()
    page = open_page(client)
    token = csrf(page)
    erased = world.call("DELETE", "/v1/users/alice", role="admin")
    assert erased.status_code in (200, 204), erased.get_data(as_text=True)
    body = client.get("/me").get_data(as_text=True)
    assert "Your account was deleted" in body
    assert "Turn on" not in body
    assert "Turn off" not in body
    assert switch(client, "model_training", "granted", token).status_code == 409


def test_gpc_is_honoured_and_the_page_says_so(world: Api) -> None:
    client = world.app.test_client()
    page = open_page(client, **{"Sec-GPC": "1"})
    body = page.get_data(as_text=True)
    assert "Global Privacy Control" in body
    assert "We have just turned off: Personalised ads." in body
    assert "Off — your browser&#39;s Global Privacy Control signal asked for this" in body
    events = world.call("GET", "/v1/users/alice/events", role="support").get_json()["events"]
    assert (events[-1]["purpose"], events[-1]["data"]["source"]) == ("ads", "gpc")


def test_the_record_downloads_signed_from_the_page(world: Api) -> None:
    client = world.app.test_client()
    open_page(client)
    resp = client.get("/me/record")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment")
    record = json.loads(resp.get_data(as_text=True))
    assert record["subject"]["user_id"] == "alice"
    assert "jws" in record["proof"]


def test_without_a_session_the_page_says_how_to_open_it(client: FlaskClient) -> None:
    resp = client.get("/me")
    assert resp.status_code == 401
    assert "Open your privacy settings from the app" in resp.get_data(as_text=True)
    assert client.get("/me/record").status_code == 401


# --- languages -----------------------------------------------------------------------------------

GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
GERMAN_DATE = re.compile(r'<time datetime="[^"]+">\d{1,2}\. \w+\.? \d{4}, \d\d:\d\d UTC</time>')
ENGLISH_DATE = re.compile(
    r'<time datetime="[^"]+">[A-Z][a-z]{2} \d{1,2}, \d{4}, \d\d:\d\d UTC</time>'
)


def language_cookie(resp: Any) -> str | None:
    """The Set-Cookie header that remembers the page's language, if the response sets it."""
    found = [c for c in resp.headers.getlist("Set-Cookie") if c.startswith("consent_me_lang=")]
    return found[0] if found else None


def test_accept_language_de_shows_the_page_in_german_and_admins_texts_as_stored(
    world: Api,
) -> None:
    client = world.app.test_client()
    page = open_page(client, **GERMAN)
    switch(client, "model_training", "granted", csrf(page))
    body = client.get("/me", headers=GERMAN).get_data(as_text=True)
    assert '<html lang="de">' in body
    for german in (
        "<title>Ihre Datenschutzeinstellungen</title>",
        "Wofür wir Ihre Daten verwenden dürfen",
        "Ein — die Voreinstellung",
        "Ein — Sie haben es eingeschaltet",
        "Model Training ausschalten",
        "Sie haben Model Training auf „Ein“ gestellt.",
        "Ihr Konto wurde angelegt: Personalised ads „Ein“.",
        "Meinen Einwilligungsnachweis herunterladen",
        "Abmelden",
    ):
        assert german in body, german
    # Titles and descriptions are data an admin entered: shown as stored.
    assert "Ads chosen from what you post." in body
    assert GERMAN_DATE.search(body)
    for english in ("Turn off", "Your history", "Sign out", "the default", "You turned"):
        assert english not in body, english


def test_without_a_german_accept_language_the_page_is_english(world: Api) -> None:
    client = world.app.test_client()
    for accept in ({}, {"Accept-Language": "fr-FR,fr;q=0.9"}, {"Accept-Language": "en-GB"}):
        body = open_page(client, **accept).get_data(as_text=True)
        assert '<html lang="en">' in body
        assert "What we may use your data for" in body
        assert ENGLISH_DATE.search(body)


def test_the_switch_is_remembered_in_a_strict_cookie_for_me_and_beats_accept_language(
    world: Api,
) -> None:
    client = world.app.test_client()
    german = open_page(client, **GERMAN).get_data(as_text=True)
    assert '<a href="/me?lang=en" lang="en" hreflang="en">English</a>' in german
    assert 'hreflang="de" aria-current="true">Deutsch</a>' in german
    chosen = client.get("/me?lang=en", headers=GERMAN)
    assert chosen.status_code == 200
    assert '<html lang="en">' in chosen.get_data(as_text=True)
    cookie = language_cookie(chosen)
    assert cookie is not None
    assert cookie.startswith("consent_me_lang=en;")
    for rule in ("Path=/me", "SameSite=Strict", "HttpOnly", "Max-Age="):
        assert rule in cookie
    again = client.get("/me", headers=GERMAN)
    assert "What we may use your data for" in again.get_data(as_text=True)
    assert language_cookie(again) is None
    back = client.get("/me?lang=de")
    assert "Wofür wir Ihre Daten verwenden dürfen" in back.get_data(as_text=True)
    assert "Wofür" in client.get("/me").get_data(as_text=True)


def test_a_product_link_may_name_the_language_and_still_opens_the_page(world: Api) -> None:
    client = world.app.test_client()
    exchanged = client.get(f"/me?token={user_token('alice')}&lang=de")
    assert (exchanged.status_code, exchanged.headers["Location"]) == (303, "/me")
    assert language_cookie(exchanged) is not None
    assert '<html lang="de">' in client.get("/me").get_data(as_text=True)


def test_a_language_the_page_lacks_is_no_choice_and_accept_language_decides(world: Api) -> None:
    client = world.app.test_client()
    exchanged = client.get(f"/me?token={user_token('alice')}&lang=fr", headers=GERMAN)
    assert exchanged.status_code == 303
    assert language_cookie(exchanged) is None
    assert '<html lang="de">' in client.get("/me?lang=fr", headers=GERMAN).get_data(as_text=True)
    assert '<html lang="en">' in client.get("/me?lang=fr").get_data(as_text=True)


def test_refusals_are_told_in_the_users_language(world: Api) -> None:
    client = world.app.test_client()
    expired = usertokens.mint("alice", USER_TOKEN_SECRET.encode(), minutes=1, now=time.time() - 600)
    refused = client.get(f"/me?token={expired}", headers=GERMAN)
    assert refused.status_code == 401
    body = refused.get_data(as_text=True)
    assert '<html lang="de">' in body
    assert "Dieser Link funktioniert nicht" in body
    assert "Öffnen Sie Ihre Datenschutzeinstellungen erneut aus der App." in body
    assert "mint" not in body  # the API's words for developers stay in the API

    token = user_token("alice")
    client.get(f"/me?token={token}")
    reused = world.app.test_client().get(f"/me?token={token}", headers=GERMAN)
    assert "Link bereits verwendet" in reused.get_data(as_text=True)

    page = client.get("/me", headers=GERMAN)
    forged = client.post(
        "/me/consents/model_training", data={"csrf_token": "x", "state": "granted"}, headers=GERMAN
    )
    assert forged.status_code == 400
    assert "Formular abgelaufen oder gefälscht" in forged.get_data(as_text=True)
    bad = client.post(
        "/me/consents/model_training",
        data={"csrf_token": csrf(page), "state": "maybe"},
        headers=GERMAN,
    )
    assert bad.status_code == 400
    assert "nur ein- oder ausgeschaltet" in bad.get_data(as_text=True)
    assert world.call("DELETE", "/v1/users/alice", role="app").status_code == 200
    erased = client.post(
        "/me/consents/model_training",
        data={"csrf_token": csrf(page), "state": "granted"},
        headers=GERMAN,
    )
    assert erased.status_code == 409
    assert "Ihr Konto wurde gelöscht, daher können" in erased.get_data(as_text=True)
    signed_out = world.app.test_client().get("/me", headers=GERMAN)
    assert "Öffnen Sie Ihre Datenschutzeinstellungen aus der App" in signed_out.get_data(
        as_text=True
    )


def test_only_me_is_translated_the_console_and_the_json_apis_stay_english(world: Api) -> None:
    client = world.app.test_client()
    client.set_cookie("consent_me_lang", "de", path="/")
    doc = client.get("/v1/me?lang=de", headers=bearer(user_token("alice"), **GERMAN)).get_json()
    [training] = [c for c in doc["consents"] if c["purpose"] == "model_training"]
    assert training["explanation"]["text"] == "Off — the default in your region (EEA)"
    problem = client.get(
        "/v1/purposes/nothing?lang=de", headers=bearer(world.tokens["app"], **GERMAN)
    )
    assert problem.get_json()["title"] == "Not found"
    console = client.get("/console/sign-in?lang=de", headers=GERMAN).get_data(as_text=True)
    assert "API key" in console
    assert 'lang="de"' not in console
    assert language_cookie(client.get("/console/sign-in?lang=de")) is None
