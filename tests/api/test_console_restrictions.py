"""The console's restrictions, legal bases and notices over the Flask test client: pages,
forms, roles, CSRF, bad input, and impact counts equal to the API's previews."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.domain import events as ev
from service.ledger import purposes as purpose_ledger
from service.reads import impact
from service.runtime.extensions import db
from service.web.console.wording import basis_words, event_words, time_words
from tests.api.console_client import Console
from tests.conftest import app_config
from tests.factories import Api, ledger_state

PURPOSE = "model_training"
WINDOW = {"from": "2024-05-01T00:00:00Z", "to": "2024-09-01T00:00:00Z", "time_basis": "processed"}
# The 2024-style order as the form sends it: the EEA, content processed in a window (UTC).
ORDER = {
    "authority": "Data Protection Commission",
    "instrument": "Undertaking of 14 June 2024",
    "purposes": [PURPOSE],
    "jurisdictions": ["EEA"],
    "window_from": "2024-05-01T00:00",
    "window_to": "2024-09-01T00:00",
    "time_basis": "processed",
    "reason": "Posts of EEA users processed in the window may not be used",
    "ticket": "LEGAL-42",
}
NEW = "/console/restrictions/new"
CHANGED_RE = re.compile(r'class="impact" role="status" data-changed="(\d+)"')


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The application with a fixed session secret, as a deployment would set one."""
    app = create_app({**app_config(database_url), "SECRET_KEY": "test-secret"})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def arranged(api: Api) -> Api:
    """A purpose granted everywhere; two allowed EEA users, one who said no, one in the US."""
    api.purpose(defaults={"*": "granted"})
    for user_id, country in [("de1", "DE"), ("de2", "DE"), ("fr1", "FR"), ("us1", "US")]:
        api.user(user_id, jurisdiction=country)
    api.choose("de2", "denied")
    return api


def signed_in(client: FlaskClient, api: Api, role: str) -> Console:
    """A console client signed in with the key of `role`."""
    console = Console(client)
    assert console.sign_in(api.tokens[role]).status_code == 302
    return console


@pytest.fixture
def admin(client: FlaskClient, arranged: Api) -> Console:
    """The console as an admin."""
    return signed_in(client, arranged, "admin")


@pytest.fixture
def support(client: FlaskClient, arranged: Api) -> Console:
    """The console as support."""
    return signed_in(client, arranged, "support")


def place(api: Api, **body: Any) -> dict[str, Any]:
    """Place a restriction through the API as admin."""
    full = {
        "authority": "CNIL",
        "instrument": "Order 2024-17",
        "purposes": [PURPOSE],
        "jurisdictions": ["EEA"],
        "window": None,
        "reason": "court order",
        "ticket": "LEGAL-1",
        **body,
    }
    resp = api.call("POST", "/v1/restrictions", json=full)
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def changed_shown(html: str) -> int:
    """The impact count a confirmation page shows."""
    match = CHANGED_RE.search(html)
    assert match, html[:2000]
    return int(match.group(1))


# --- reading restrictions -------------------------------------------------------------------


def test_support_sees_active_and_lifted_restrictions_with_who_placed_and_lifted_them(
    arranged: Api, support: Console
) -> None:
    windowed = place(arranged, window=WINDOW, jurisdictions=["EEA", "*"])
    lifted = place(arranged, authority="Court of Justice", jurisdictions=["FR"])
    arranged.call("DELETE", f"/v1/restrictions/{lifted['id']}?reason=order quashed")
    html = support.text("/console/restrictions")
    active, _, gone = html.partition("<h2>Lifted</h2>")
    assert f'data-restriction="{windowed["id"]}"' in active
    assert f'data-restriction="{lifted["id"]}"' in gone
    assert "CNIL" in active
    assert "Order 2024-17" in active
    assert '<span class="pill">EEA</span><span class="pill">*</span>' in active
    assert "processed from 2024-05-01 00:00 UTC until 2024-09-01 00:00 UTC" in active
    assert f"seq {windowed['placed_seq']}" in active
    assert "by admin-key" in active
    assert "Court of Justice" in gone
    assert "any time" in gone
    assert f"seq {lifted['placed_seq'] + 1}" in gone
    assert "Place a restriction" not in html


def test_a_restrictions_page_shows_its_order_its_counts_and_its_events_in_words(
    arranged: Api, support: Console
) -> None:
    placed = place(arranged, window=WINDOW)
    html = support.text(f"/console/restrictions/{placed['id']}")
    assert "Data Protection" not in html
    assert "CNIL" in html
    assert "content processed from 2024-05-01 00:00 UTC until 2024-09-01 00:00 UTC" in html
    assert re.findall(r'class="changed-placed">(\d+)<', html) == ["2"]
    assert f"Restriction #{placed['id']} placed by CNIL (Order 2024-17) on model_training" in html
    assert "2 subjects denied" in html
    assert "Lift this restriction" not in html  # support reads only
    assert support.get("/console/restrictions/4242").status_code == 404


def test_a_user_under_a_restriction_shows_it_as_the_basis_with_a_link_and_its_authority(
    arranged: Api, support: Console
) -> None:
    placed = place(arranged, window=WINDOW)
    html = support.text("/console/users/de1")
    link = f'<a href="/console/restrictions/{placed["id"]}">restriction #{placed["id"]}</a>'
    assert f"Denied — {link} by CNIL, Order 2024-17; content processed from" in html
    assert "or of no given time" in html
    assert "Granted — default for everywhere else (*)" in support.text("/console/users/us1")
    decision = {**arranged.consent("de1"), "restriction": placed}
    assert basis_words(decision) == (
        f"Denied — restriction #{placed['id']} by CNIL, Order 2024-17; content processed from "
        "2024-05-01 00:00 UTC until 2024-09-01 00:00 UTC, or of no given time"
    )


def test_every_restriction_page_has_the_security_headers_and_no_inline_script(
    arranged: Api, admin: Console
) -> None:
    placed = place(arranged)
    for path in ("/console/restrictions", f"/console/restrictions/{placed['id']}", NEW):
        resp = admin.get(path)
        assert resp.status_code == 200
        assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
        html = resp.get_data(as_text=True)
        assert "<script" not in html
        assert "style=" not in html


def test_the_navigation_links_to_restrictions_for_support_and_admin(
    client: FlaskClient, arranged: Api
) -> None:
    for role in ("support", "admin"):
        html = signed_in(client, arranged, role).text("/console/users")
        assert '<a href="/console/restrictions">Restrictions</a>' in html


# --- placing --------------------------------------------------------------------------------


def test_an_admin_places_a_restriction_only_after_a_confirmation_showing_the_api_preview(
    app: Flask, arranged: Api, admin: Console
) -> None:
    before = ledger_state(app)
    ask = admin.post(NEW, ORDER)
    assert ask.status_code == 200
    html = ask.get_data(as_text=True)
    assert "Place this restriction?" in html
    preview = arranged.call(
        "POST",
        "/v1/restrictions/impact",
        json={"purposes": [PURPOSE], "jurisdictions": ["EEA"], "window": WINDOW},
    ).get_json()
    assert changed_shown(html) == preview["changed"] == 2
    assert "<strong>2</strong> known subjects" in html
    assert ledger_state(app) == before

    done = admin.post(NEW, {**ORDER, "confirmed": "yes"}, form_page=NEW)
    assert done.status_code == 302
    [placed] = arranged.call("GET", "/v1/restrictions", role="support").get_json()
    assert done.location.endswith(f"/console/restrictions/{placed['id']}")
    assert (placed["authority"], placed["jurisdictions"], placed["placed_by"]) == (
        ORDER["authority"],
        ["EEA"],
        "admin-key",
    )
    assert placed["window"] == WINDOW
    assert placed["changed"]["placed"] == {PURPOSE: 2}
    assert "1 subject" not in admin.text(done.location)
    assert arranged.consent("fr1")["basis"] == "restriction"


def test_the_confirmation_carries_every_purpose_and_jurisdiction_chosen(
    arranged: Api, admin: Console
) -> None:
    arranged.purpose(key="ads_research", defaults={"*": "granted"})
    order = {**ORDER, "purposes": [PURPOSE, "ads_research"], "jurisdictions": ["DE", "US"]}
    order.update(window_from="", window_to="")
    html = admin.post(NEW, order).get_data(as_text=True)
    assert html.count('type="hidden" name="purposes"') == 2
    assert html.count('type="hidden" name="jurisdictions"') == 2
    # model_training: de1 and us1 (de2 said no); ads_research: de1, de2 and us1
    assert changed_shown(html) == 5
    assert "model_training: 2, ads_research: 3" in html
    assert "content of any time" in html
    assert admin.post(NEW, {**order, "confirmed": "yes"}, form_page=NEW).status_code == 302
    [placed] = arranged.call("GET", "/v1/restrictions", role="support").get_json()
    assert (placed["purposes"], placed["jurisdictions"], placed["window"]) == (
        [PURPOSE, "ads_research"],
        ["DE", "US"],
        None,
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"authority": ""}, "authority", "Name the authority."),
        ({"instrument": "a\x01b"}, "instrument", "one line without control characters"),
        ({"purposes": []}, "purposes", "Pick at least one purpose."),
        ({"purposes": ["nope"]}, "purposes", "not a valid choice"),
        ({"jurisdictions": []}, "jurisdictions", "Pick at least one jurisdiction."),
        ({"jurisdictions": ["XX"]}, "jurisdictions", "not a valid choice"),
        ({"window_to": "2024-05-01T00:00"}, "window_to", "later than window.from"),
        ({"window_to": ""}, "window_to", "both ends of the window, or neither"),
        ({"window_from": "yesterday"}, "window_from", "Not a valid datetime"),
        ({"time_basis": "uploaded"}, "time_basis", "Not a valid choice"),
        ({"reason": "no"}, "reason", "at least 3 characters"),
        ({"ticket": "T" * 101}, "ticket", "longer than 100"),
        ({"ticket": ""}, "ticket", "A ticket is required."),
    ],
)
@pytest.mark.parametrize("confirmed", ["", "yes"])
def test_bad_restriction_input_is_shown_beside_its_field_and_writes_nothing(
    app: Flask,
    admin: Console,
    change: dict[str, Any],
    field: str,
    message: str,
    confirmed: str,
) -> None:
    before = ledger_state(app)
    resp = admin.post(NEW, {**ORDER, **change, "confirmed": confirmed}, form_page=NEW)
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    errors = re.findall(rf'<p class="error" id="{field}-error">([^<]*)</p>', html)
    assert any(message in e for e in errors), (errors, html[-3000:])
    assert "Place a restriction" in html  # the form again, with what was typed
    assert ledger_state(app) == before


def test_a_purpose_removed_from_the_choices_is_refused_by_the_ledger_as_a_form_error(
    app: Flask, arranged: Api, admin: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The form offers purposes that exist; one that the ledger does not know (deleted between
    # the two pages, say) comes back from the domain's own check as an error on the field.
    monkeypatch.setattr(
        purpose_ledger, "list_all", lambda: [{"key": PURPOSE}, {"key": "ghost_purpose"}]
    )
    before = ledger_state(app)
    resp = admin.post(NEW, {**ORDER, "purposes": [PURPOSE, "ghost_purpose"]}, form_page=NEW)
    assert resp.status_code == 422
    assert '<p class="error" id="purposes-error">No such purpose.</p>' in resp.get_data(
        as_text=True
    )
    assert ledger_state(app) == before


def test_support_may_read_restrictions_but_not_place_or_lift_them(
    app: Flask, arranged: Api, support: Console
) -> None:
    placed = place(arranged)
    before = ledger_state(app)
    assert support.get(NEW).status_code == 403
    token = support.token("/console/restrictions")
    refused = support.client.post(NEW, data={**ORDER, "csrf_token": token, "confirmed": "yes"})
    assert refused.status_code == 403
    assert "admins only" in refused.get_data(as_text=True)
    lift = f"/console/restrictions/{placed['id']}/lift"
    data = {"reason": "no longer needed", "confirmed": "yes", "csrf_token": token}
    assert support.client.post(lift, data=data).status_code == 403
    assert ledger_state(app) == before


@pytest.mark.parametrize("role", ["pipeline", "app"])
def test_pipeline_and_app_keys_cannot_reach_the_restrictions_pages(
    client: FlaskClient, arranged: Api, role: str
) -> None:
    console = Console(client)
    assert console.sign_in(arranged.tokens[role]).status_code == 401
    for path in ("/console/restrictions", NEW, f"/console/purposes/{PURPOSE}/notices"):
        resp = console.get(path)
        assert resp.status_code == 302
        assert resp.location.endswith("/console/sign-in")


def test_a_forged_csrf_token_places_lifts_and_publishes_nothing(
    app: Flask, arranged: Api, admin: Console
) -> None:
    placed = place(arranged)
    before = ledger_state(app)
    forged = {"csrf_token": "forged", "confirmed": "yes"}
    posts: list[tuple[str, dict[str, Any]]] = [
        (NEW, ORDER),
        (f"/console/restrictions/{placed['id']}/lift", {"reason": "quashed"}),
        (f"/console/purposes/{PURPOSE}/notices", {"version": "1", "text": "We train models."}),
        (f"/console/purposes/{PURPOSE}", {"defaults": "*=denied", "unknown_subject": "denied"}),
    ]
    for path, data in posts:
        resp = admin.client.post(path, data={**data, **forged})
        assert resp.status_code == 400
        assert "Form expired or forged" in resp.get_data(as_text=True)
    assert ledger_state(app) == before


# --- lifting --------------------------------------------------------------------------------


def test_lifting_needs_a_reason_and_a_confirmation_showing_the_api_preview(
    app: Flask, arranged: Api, admin: Console
) -> None:
    placed = place(arranged, window=WINDOW)
    page = f"/console/restrictions/{placed['id']}"
    lift = f"{page}/lift"
    before = ledger_state(app)
    missing = admin.post(lift, {"reason": ""}, form_page=page)
    assert missing.status_code == 422
    assert "A reason is required." in missing.get_data(as_text=True)
    ask = admin.post(lift, {"reason": "Undertaking ended"}, form_page=page)
    html = ask.get_data(as_text=True)
    assert f"Lift restriction #{placed['id']}?" in html
    preview = arranged.call("GET", f"/v1/restrictions/{placed['id']}/impact").get_json()
    assert changed_shown(html) == preview["changed"] == 2
    assert "would be allowed again" in html
    assert ledger_state(app) == before

    done = admin.post(lift, {"reason": "Undertaking ended", "confirmed": "yes"}, form_page=page)
    assert done.status_code == 302
    lifted = arranged.call("GET", f"/v1/restrictions/{placed['id']}", role="support").get_json()
    assert (lifted["status"], lifted["lifted_by"], lifted["lift_reason"]) == (
        "lifted",
        "admin-key",
        "Undertaking ended",
    )
    after = admin.text(page)
    assert "2 subjects allowed again" in after
    assert re.findall(r'class="changed-lifted">(\d+)<', after) == ["2"]
    assert "Lift this restriction" not in after
    assert arranged.consent("fr1")["basis"] == "default"

    state = ledger_state(app)
    token = admin.token("/console/restrictions")
    again = admin.client.post(
        lift, data={"reason": "twice", "confirmed": "yes", "csrf_token": token}
    )
    assert again.status_code == 409
    assert "already lifted" in again.get_data(as_text=True)
    assert ledger_state(app) == state


# --- legal bases and notices ----------------------------------------------------------------


def publish(api: Api, version: str, text: str = "We train our models on your posts.") -> None:
    """Publish a notice version of the purpose through the API."""
    resp = api.call(
        "PUT", f"/v1/purposes/{PURPOSE}/notice", json={"version": version, "text": text}
    )
    assert resp.status_code == 200, resp.get_json()


def test_a_users_page_shows_each_decisions_legal_basis_and_the_notice_they_were_shown(
    arranged: Api, support: Console
) -> None:
    arranged.call("PATCH", f"/v1/purposes/{PURPOSE}", json={"legal_bases": {"*": "consent"}})
    arranged.purpose(key="ads_research", legal_bases={"*": "legitimate_interest"})
    publish(arranged, "2024-06")
    resp = arranged.call(
        "PUT",
        f"/v1/users/de1/consents/{PURPOSE}",
        role="app",
        json={"state": "granted", "source": "settings", "notice_version": "2024-06"},
    )
    assert resp.status_code == 200, resp.get_json()
    html = support.text("/console/users/de1")
    assert "Granted — user&#39;s choice (settings, notice 2024-06)" in html
    link = f'<a href="/console/purposes/{PURPOSE}/notices#notice-2024-06">notice 2024-06</a>'
    assert f'<td class="own-choice" data-for="{PURPOSE}">Granted · {link}</td>' in html
    assert '<td class="own-choice" data-for="ads_research">none</td>' in html
    assert f'<td class="legal-basis" data-for="{PURPOSE}">Consent</td>' in html
    assert re.search(r'<td class="legal-basis" data-for="ads_research">Legitimate interest', html)


def test_a_purpose_not_offered_shows_not_offered_as_basis_and_legal_basis(
    arranged: Api, support: Console
) -> None:
    arranged.call("PATCH", f"/v1/purposes/{PURPOSE}", json={"legal_bases": {"EEA": "not_offered"}})
    html = support.text("/console/users/de1")
    assert "Denied — purpose not offered in the user&#39;s jurisdiction" in html
    assert "Not offered (the purpose is not used there)" in html


def test_the_purposes_page_shows_legal_bases_and_the_current_notice(
    arranged: Api, admin: Console
) -> None:
    arranged.call(
        "PATCH", f"/v1/purposes/{PURPOSE}", json={"legal_bases": {"EEA": "legitimate_interest"}}
    )
    publish(arranged, "1")
    publish(arranged, "2", "We train our models on your public posts.")
    html = admin.text("/console/purposes")
    assert '<span class="pill">EEA: legitimate_interest</span>' in html
    assert f'<a href="/console/purposes/{PURPOSE}/notices">version 2' in html


def test_support_reads_every_notice_version_but_may_not_publish(
    app: Flask, arranged: Api, support: Console
) -> None:
    publish(arranged, "1", "First text.")
    publish(arranged, "2", "Second text.")
    page = f"/console/purposes/{PURPOSE}/notices"
    html = support.text(page)
    assert html.index('id="notice-2"') < html.index('id="notice-1"')
    assert "Second text." in html
    assert "First text." in html
    assert "(current)" in html
    assert "Publish a new version" not in html
    before = ledger_state(app)
    resp = support.post(page, {"version": "3", "text": "Third.", "confirmed": "yes"})
    assert resp.status_code == 403
    assert ledger_state(app) == before


def test_an_admin_publishes_a_notice_version_only_after_a_confirmation(
    app: Flask, arranged: Api, admin: Console
) -> None:
    page = f"/console/purposes/{PURPOSE}/notices"
    form = {"version": "2024-06", "text": "We train models on posts.", "url": "https://x.test/n"}
    before = ledger_state(app)
    ask = admin.post(page, form)
    assert "Publish version 2024-06 of the notice of model_training?" in ask.get_data(as_text=True)
    assert ledger_state(app) == before
    assert admin.post(page, {**form, "confirmed": "yes"}).status_code == 302
    notice = arranged.call("GET", f"/v1/purposes/{PURPOSE}/notices/2024-06").get_json()
    assert (notice["text"], notice["url"], notice["published_by"]) == (
        form["text"],
        form["url"],
        "admin-key",
    )
    assert "version 2024-06" in admin.text("/console/purposes")


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"version": "1", "text": "Other text."}, "version", "published already"),
        ({"version": "v 2", "text": "Text."}, "version", "Must be 1-32 characters"),
        ({"version": "2", "text": "   "}, "text", "The text is required."),
        ({"version": "2", "text": "Text.", "url": "ftp://x.test"}, "url", "http or https URL"),
    ],
)
def test_bad_notice_input_is_shown_beside_its_field_and_publishes_nothing(
    app: Flask, arranged: Api, admin: Console, form: dict[str, str], field: str, message: str
) -> None:
    publish(arranged, "1")
    before = ledger_state(app)
    resp = admin.post(f"/console/purposes/{PURPOSE}/notices", {**form, "confirmed": "yes"})
    assert resp.status_code == 422
    errors = re.findall(rf'id="{field}-error">([^<]*)<', resp.get_data(as_text=True))
    assert any(message in e for e in errors), errors
    assert ledger_state(app) == before


def test_an_admin_edits_legal_bases_and_the_confirmation_counts_choices_not_offered_overrules(
    app: Flask, arranged: Api, admin: Console
) -> None:
    arranged.choose("fr1", "granted")
    edit = f"/console/purposes/{PURPOSE}"
    form = {"defaults": "*=granted", "legal_bases": "EEA=not_offered", "unknown_subject": "denied"}
    before = ledger_state(app)
    html = admin.post(edit, form).get_data(as_text=True)
    with app.app_context():
        expected = impact.default_change(PURPOSE, {"*": "granted"}, {"EEA": "not_offered"})
    # de1 on the default, fr1 by choice: denied; de2 said no already
    assert changed_shown(html) == expected["changed"] == 2
    assert expected["with_own_state"] == 2
    assert "and 2 with their own choice or an active override" in html
    assert "choices and active overrides are unaffected" not in html
    assert "(none: consent everywhere)" in html
    assert ledger_state(app) == before
    assert admin.post(edit, {**form, "confirmed": "yes"}).status_code == 302
    purpose = arranged.call("GET", f"/v1/purposes/{PURPOSE}").get_json()
    assert purpose["legal_bases"] == {"EEA": "not_offered"}
    assert arranged.consent("fr1")["basis"] == "not_offered"


def test_a_defaults_only_change_still_says_choices_are_unaffected(
    arranged: Api, admin: Console
) -> None:
    edit = f"/console/purposes/{PURPOSE}"
    html = admin.post(edit, {"defaults": "*=denied", "unknown_subject": "denied"}).get_data(
        as_text=True
    )
    assert changed_shown(html) == 3
    assert "choices and active overrides are unaffected" in html


@pytest.mark.parametrize(
    ("legal_bases", "message"),
    [("EEA=maybe", "SELECTOR=consent or SELECTOR=legitimate_interest"), ("XX=consent", "ISO")],
)
def test_bad_legal_bases_get_a_clear_message_and_change_nothing(
    app: Flask, admin: Console, legal_bases: str, message: str
) -> None:
    before = ledger_state(app)
    resp = admin.post(
        f"/console/purposes/{PURPOSE}",
        {"defaults": "*=granted", "legal_bases": legal_bases, "unknown_subject": "denied"},
    )
    assert resp.status_code == 422
    errors = re.findall(r'id="legal_bases-error">([^<]*)<', resp.get_data(as_text=True))
    assert any(message in e for e in errors), errors
    assert ledger_state(app) == before


# --- words ----------------------------------------------------------------------------------


def test_restriction_and_signing_events_have_words() -> None:
    placed = ev.RestrictionPlaced(
        purpose=PURPOSE,
        restriction_id=3,
        authority="CNIL",
        instrument="Order 2024-17",
        purposes=(PURPOSE,),
        jurisdictions=("EEA", "CH"),
        window_from=datetime(2024, 5, 1, tzinfo=UTC),
        window_to=datetime(2024, 9, 1, tzinfo=UTC),
        time_basis="created",
        changed=1204,
    )
    assert event_words(placed) == (
        "Restriction #3 placed by CNIL (Order 2024-17) on model_training in EEA, CH, content "
        "created from 2024-05-01 00:00 UTC until 2024-09-01 00:00 UTC: 1,204 subjects denied"
    )
    lifted = ev.RestrictionLifted(purpose=PURPOSE, restriction_id=3, changed=1)
    assert event_words(lifted) == "Restriction #3 lifted on model_training: 1 subject allowed again"
    rotated = ev.SigningKeyRotated(
        kid="k2", previous_kid="k1", previous_expires_at=datetime(2025, 1, 1, 12, tzinfo=UTC)
    )
    assert event_words(rotated) == (
        "Signing key rotated: k2 signs from now on; k1 stays published for checking until "
        "2025-01-01 12:00 UTC"
    )
    assert (
        event_words(ev.SigningKeyRotated(kid="k1")) == "Signing key rotated: k1 signs from now on"
    )


def test_a_defaults_change_counts_no_subject_an_active_restriction_keeps_denied(
    arranged: Api, admin: Console
) -> None:
    placed = place(arranged, jurisdictions=["FR"], window=WINDOW)
    edit = f"/console/purposes/{PURPOSE}"
    html = admin.post(edit, {"defaults": "*=denied", "unknown_subject": "denied"}).get_data(
        as_text=True
    )
    # de1 and us1 turn denied; fr1 is denied by the restriction whatever the defaults
    assert changed_shown(html) == 2
    assert "1 of them is under an active restriction" in html
    arranged.call("DELETE", f"/v1/restrictions/{placed['id']}?reason=order quashed")
    html = admin.post(edit, {"defaults": "*=denied", "unknown_subject": "denied"}).get_data(
        as_text=True
    )
    assert changed_shown(html) == 3
    assert "under an active restriction" not in html


@pytest.mark.parametrize(
    ("value", "exact", "words"),
    [
        ("2024-05-01T00:00:00Z", False, "2024-05-01 00:00 UTC"),
        ("2024-05-01T14:03:27.280654Z", False, "2024-05-01 14:03:27 UTC"),
        ("2024-05-01T14:03:27.5+02:00", True, "2024-05-01 12:03:27.500000 UTC"),
        (None, False, "—"),
    ],
)
def test_times_are_written_in_utc_to_the_minute_or_second(
    value: str | None, exact: bool, words: str
) -> None:
    assert time_words(value, exact=exact) == words


def test_clicking_the_confirmation_button_twice_places_the_order_once(
    app: Flask, arranged: Api, admin: Console
) -> None:
    html = admin.post(NEW, ORDER).get_data(as_text=True)
    match = re.search(r'name="once" value="([^"]+)"', html)
    assert match
    confirmed = {**ORDER, "confirmed": "yes", "once": match.group(1)}
    first = admin.post(NEW, confirmed, form_page=NEW)
    state = ledger_state(app)
    second = admin.post(NEW, confirmed, form_page=NEW)
    assert (first.status_code, second.status_code) == (302, 302)
    assert second.location == first.location
    assert ledger_state(app) == state
    assert len(arranged.call("GET", "/v1/restrictions", role="support").get_json()) == 1
