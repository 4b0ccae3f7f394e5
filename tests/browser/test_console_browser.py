"""The console driven in a real headless chromium against a live gunicorn server."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Screenshots
from tests.live import LiveServer

# expect() waits for the page to get there (a navigation after a click is not instant).
expect = pytest.importorskip("playwright.sync_api", reason="needs playwright").expect

USER = "u1"


def api(server: LiveServer, method: str, path: str, role: str, **kwargs: Any) -> Any:
    """Call the JSON API as a key of `role` and return the decoded answer."""
    resp = httpx.request(
        method,
        server.base_url + path,
        headers={"Authorization": f"Bearer {server.tokens[role]}", **kwargs.pop("headers", {})},
        **kwargs,
    )
    assert resp.status_code < 300, resp.text
    return resp.json()


@pytest.fixture(scope="module", autouse=True)
def arranged(server: LiveServer) -> None:
    """A purpose denied in the EEA and granted elsewhere, and users in Germany and the US."""
    api(
        server,
        "POST",
        "/v1/purposes",
        "admin",
        json={
            "key": "model_training",
            "title": "Model training",
            "defaults": {"EEA": "denied", "*": "granted"},
        },
    )
    api(server, "PUT", f"/v1/users/{USER}", "app", json={"jurisdiction": "DE"})
    api(server, "PUT", "/v1/users/u2", "app", json={"jurisdiction": "US"})
    api(server, "PUT", "/v1/users/u2/consents/model_training", "app", json={"state": "denied"})


def sign_in(
    page: Any, server: LiveServer, role: str, screenshot: Screenshots | None = None
) -> None:
    """Sign in from the keyboard alone: type the key, press Enter."""
    page.goto("/console/")
    page.get_by_label("API key").focus()
    page.keyboard.type(server.tokens[role])
    if screenshot:
        screenshot(page, "01-sign-in")
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_a_wrong_role_is_refused_with_a_clear_message(page: Any, server: LiveServer) -> None:
    sign_in(page, server, "pipeline")
    expect(page.get_by_role("alert")).to_contain_text("cannot use the console")
    page.goto("/console/users")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))


def test_support_finds_a_user_overrides_and_lifts_and_the_api_history_shows_it(
    page: Any, server: LiveServer, screenshot: Screenshots
) -> None:
    sign_in(page, server, "support", screenshot)
    page.get_by_label("User ID").fill(USER)
    screenshot(page, "02-find-user")
    page.get_by_role("button", name="Find").click()
    basis = page.locator('td[data-purpose="model_training"]')
    expect(basis).to_have_text("Denied — default for EEA")

    page.get_by_label("Purpose").select_option("model_training")
    page.get_by_label("granted").check()
    page.get_by_label("Reason", exact=True).fill("Regulator request")
    page.get_by_label("Ticket").fill("SUP-123")
    screenshot(page, "03-user")
    page.get_by_role("button", name="Review override…").click()
    expect(page.get_by_role("heading", name="Place this override?")).to_be_visible()
    screenshot(page, "04-confirm-override")
    page.get_by_role("button", name="Place override").click()
    expect(basis).to_contain_text("Granted — override by live-support, ticket SUP-123")
    expect(page.locator(".timeline li").first).to_contain_text("override_placed")
    screenshot(page, "05-override-placed")

    page.get_by_label("Reason for lifting").fill("Request withdrawn")
    page.get_by_role("button", name="Lift…").click()
    screenshot(page, "06-confirm-lift")
    page.get_by_role("button", name="Lift override").click()
    expect(basis).to_have_text("Denied — default for EEA")
    expect(page.locator(".timeline li").first).to_contain_text("override_lifted")

    events = api(server, "GET", f"/v1/users/{USER}/events", "support")["events"]
    placed, lifted = events[-2:]
    assert (placed["kind"], placed["actor"], placed["role"], placed["ticket"]) == (
        "override_placed",
        "live-support",
        "support",
        "SUP-123",
    )
    assert (lifted["kind"], lifted["actor"], lifted["reason"]) == (
        "override_lifted",
        "live-support",
        "Request withdrawn",
    )


def test_an_admin_edits_defaults_after_seeing_how_many_subjects_change(
    page: Any, server: LiveServer, screenshot: Screenshots
) -> None:
    sign_in(page, server, "admin")
    page.get_by_role("link", name="Purposes").click()
    screenshot(page, "07-purposes")
    page.get_by_role("link", name="Edit policy of model_training").click()
    page.get_by_label("Defaults, one SELECTOR=state per line").fill("EEA=granted\n*=granted")
    page.get_by_label("Legal bases").fill("US=not_offered")
    screenshot(page, "08-edit-purpose")
    page.get_by_role("button", name="Review change").click()
    # u1 (DE) turns granted; u2 (US) said no, so not offering it there changes no answer
    expect(page.get_by_role("status")).to_contain_text("1 known subject would change")
    expect(page.get_by_role("status")).to_contain_text("and 1 with their own choice")
    screenshot(page, "09-confirm-purpose")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status")).to_contain_text("Policy of model_training saved.")
    purpose = api(server, "GET", "/v1/purposes/model_training", "pipeline")
    assert purpose["defaults"] == {"EEA": "granted", "*": "granted"}
    assert purpose["legal_bases"] == {"US": "not_offered"}
    change = api(server, "GET", "/v1/changes?purpose=model_training", "pipeline")["events"][-1]
    assert (change["kind"], change["actor"], change["role"]) == (
        "policy_changed",
        "live-admin",
        "admin",
    )


def test_a_form_with_a_forged_csrf_token_is_refused_and_changes_nothing(
    page: Any, server: LiveServer, screenshot: Screenshots
) -> None:
    before = api(server, "GET", "/v1/users/u2/events", "support")["events"]
    sign_in(page, server, "support")
    page.goto("/console/users/u2")
    form = page.locator("form.grid")
    form.locator('input[name="csrf_token"]').evaluate("input => { input.value = 'forged'; }")
    page.get_by_label("granted").check()
    page.get_by_label("Reason", exact=True).fill("x")
    page.get_by_label("Ticket").fill("SUP-9")
    page.get_by_role("button", name="Review override…").click()
    expect(page.get_by_role("heading", name="Form expired or forged")).to_be_visible()
    screenshot(page, "10-csrf-refused")
    assert api(server, "GET", "/v1/users/u2/events", "support")["events"] == before


def test_signing_out_ends_the_session(page: Any, server: LiveServer) -> None:
    sign_in(page, server, "support")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")
    page.goto("/console/users/u1")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
