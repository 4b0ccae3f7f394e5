"""Restrictions, legal bases and notices in the console, driven in a real headless chromium
against a live gunicorn server: the 2024-style order placed through the form and lifted."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import Screenshots
from tests.browser.test_console_browser import api, sign_in
from tests.live import LiveServer

expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect

PURPOSE = "model_training"
SCOPE = {
    "purposes": [PURPOSE],
    "jurisdictions": ["EEA"],
    "window": {
        "from": "2024-05-01T00:00:00Z",
        "to": "2024-09-01T00:00:00Z",
        "time_basis": "processed",
    },
}


@pytest.fixture(scope="module", autouse=True)
def arranged(server: LiveServer) -> None:
    """A purpose granted everywhere, on legitimate interest in the EEA; users in Germany,
    France and the US; a published notice that the German user chose under."""
    api(
        server,
        "POST",
        "/v1/purposes",
        "admin",
        json={
            "key": PURPOSE,
            "title": "Model training",
            "defaults": {"*": "granted"},
            "legal_bases": {"EEA": "legitimate_interest"},
        },
    )
    for user_id, country in [("de1", "DE"), ("fr1", "FR"), ("us1", "US")]:
        api(server, "PUT", f"/v1/users/{user_id}", "app", json={"jurisdiction": country})
    notice = {"version": "2024-05", "text": "We may train our AI models on your public posts."}
    api(server, "PUT", f"/v1/purposes/{PURPOSE}/notice", "admin", json=notice)
    api(
        server,
        "PUT",
        f"/v1/users/de1/consents/{PURPOSE}",
        "app",
        json={"state": "granted", "source": "settings", "notice_version": "2024-05"},
    )


def impact_count(page: Any) -> int:
    """The count the confirmation page shows."""
    return int(page.locator(".impact").get_attribute("data-changed"))


def test_an_admin_places_the_2024_order_sees_it_on_an_eea_user_and_lifts_it(
    page: Any, server: LiveServer, screenshot: Screenshots
) -> None:
    sign_in(page, server, "admin")
    page.get_by_role("link", name="Restrictions", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("^Restrictions"))).to_be_visible()
    page.get_by_role("link", name="Place a restriction…").click()

    page.get_by_label("Authority").fill("Data Protection Commission")
    page.get_by_label("Instrument").fill("Undertaking of 14 June 2024")
    page.get_by_label("Purposes").select_option([PURPOSE])
    page.get_by_label("Jurisdictions").select_option(["EEA"])
    page.get_by_label("Window from").fill("2024-05-01T00:00")
    page.get_by_label("Window to").fill("2024-09-01T00:00")
    page.get_by_label("processed time").check()
    page.get_by_label("Ticket").fill("LEGAL-42")
    page.get_by_label("Reason").fill("EEA users' posts processed in the window may not be used")
    screenshot(page, "11-place-restriction")
    page.get_by_role("button", name="Review restriction…").click()

    expect(page.get_by_role("heading", name="Place this restriction?")).to_be_visible()
    preview = api(server, "POST", "/v1/restrictions/impact", "admin", json=SCOPE)
    assert impact_count(page) == preview["changed"] == 2  # de1 and fr1; us1 is not in the EEA
    expect(page.get_by_role("status")).to_contain_text("2 known subjects would be denied")
    assert api(server, "GET", "/v1/restrictions", "support") == []
    screenshot(page, "12-confirm-restriction")
    page.get_by_role("button", name="Place restriction").click()

    expect(page.get_by_role("status")).to_contain_text("placed: 2 subjects denied")
    [placed] = api(server, "GET", "/v1/restrictions", "support")
    assert (placed["authority"], placed["window"]["time_basis"]) == (
        "Data Protection Commission",
        "processed",
    )
    screenshot(page, "13-restriction")
    page.get_by_role("link", name="Restrictions", exact=True).click()
    expect(page.locator(f'tr[data-restriction="{placed["id"]}"]')).to_contain_text(
        "Data Protection Commission"
    )
    screenshot(page, "14-restrictions")

    page.goto("/console/users/de1")
    basis = page.locator(f'td.basis[data-purpose="{PURPOSE}"]')
    expect(basis).to_contain_text(
        f"Denied — restriction #{placed['id']} by Data Protection Commission"
    )
    expect(page.locator(f'td.legal-basis[data-for="{PURPOSE}"]')).to_contain_text(
        "Legitimate interest"
    )
    expect(page.locator(f'td.own-choice[data-for="{PURPOSE}"]')).to_have_text(
        "Granted · notice 2024-05"
    )
    screenshot(page, "15-user-restricted")
    assert api(server, "GET", f"/v1/users/us1/consents/{PURPOSE}", "support")["basis"] == "default"

    basis.get_by_role("link", name=f"restriction #{placed['id']}").click()
    page.get_by_label("Reason for lifting").fill("The undertaking ended")
    page.get_by_role("button", name="Review lift…").click()
    expect(page.get_by_role("heading", name=f"Lift restriction #{placed['id']}?")).to_be_visible()
    lifting = api(server, "GET", f"/v1/restrictions/{placed['id']}/impact", "admin")
    assert impact_count(page) == lifting["changed"] == 2
    screenshot(page, "16-confirm-lift-restriction")
    page.get_by_role("button", name="Lift restriction").click()
    expect(page.get_by_role("status")).to_contain_text("lifted: 2 subjects allowed again")

    page.goto("/console/users/de1")
    expect(basis).to_have_text("Granted — user's choice (settings, notice 2024-05)")
    lifted = api(server, "GET", f"/v1/restrictions/{placed['id']}", "support")
    assert (lifted["status"], lifted["lifted_by"]) == ("lifted", "live-admin")


def test_support_reads_restrictions_and_notices_but_has_no_forms_to_change_them(
    page: Any, server: LiveServer
) -> None:
    sign_in(page, server, "support")
    page.get_by_role("link", name="Restrictions", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("^Restrictions"))).to_be_visible()
    expect(page.get_by_role("link", name="Place a restriction…")).to_have_count(0)
    page.goto("/console/users/de1")
    page.locator(f'td.own-choice[data-for="{PURPOSE}"]').get_by_role("link").click()
    expect(page).to_have_url(re.compile(r"/notices#notice-2024-05$"))
    expect(page.locator("#notice-2024-05")).to_contain_text("public posts")
    expect(page.get_by_role("heading", name="Publish a new version")).to_have_count(0)


def test_an_admin_publishes_a_notice_version_through_the_form(
    page: Any, server: LiveServer, screenshot: Screenshots
) -> None:
    sign_in(page, server, "admin")
    page.get_by_role("link", name="Purposes").click()
    page.get_by_role("link", name=f"version 2024-05 — notice of {PURPOSE}").click()
    page.get_by_label("Version").fill("2024-06")
    page.get_by_label("Text users are shown").fill(
        "We may train our AI models on your public posts. You can object at any time."
    )
    page.get_by_label("URL of the full notice").fill("https://example.com/privacy/ai")
    screenshot(page, "17-notices")
    page.get_by_role("button", name="Review notice…").click()
    expect(page.get_by_role("heading", name=re.compile("^Publish version 2024-06"))).to_be_visible()
    page.get_by_role("button", name="Publish notice").click()
    expect(page.get_by_role("status")).to_contain_text("Notice version 2024-06")
    expect(page.locator("#notice-2024-06")).to_contain_text("(current)")
    purpose = api(server, "GET", f"/v1/purposes/{PURPOSE}", "pipeline")
    assert purpose["notice"]["version"] == "2024-06"
