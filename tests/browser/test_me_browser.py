"""The /me page in a real headless chromium against a live gunicorn started as `make run` starts
it: the way in from a product's link, a switch turned by keyboard alone, the signed record
checked by `consent verify`, refused links, German, axe-core, and reflow at 360 px and 200 %."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.web import usertokens
from tests.browser.conftest import Screenshots
from tests.browser.test_console_browser import api
from tests.conftest import USER_TOKEN_SECRET
from tests.live import LiveServer

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
expect = sync_api.expect
Axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="needs dev extra").Axe

CONSENT = Path(sys.executable).parent / "consent"
# Another site that links to the page, as a product's settings screen would.
PRODUCT = "https://product.example"
TRAINING, ADS = "model_training", "ads"
RUN = "assistant-2026-01"
HEADING = "What we may use your data for"
GERMAN_HEADING = "Wofür wir Ihre Daten verwenden dürfen"
DESKTOP = {"width": 1200, "height": 800}
NARROW = {"width": 360, "height": 740}
# A 1280 x 800 window zoomed to 200 %: half as many CSS pixels, each drawn twice as large.
ZOOMED = {"width": 640, "height": 400}


@pytest.fixture(scope="module", autouse=True)
def arranged(server: LiveServer) -> None:
    """Model training (off by default in the EEA, with a notice) and personalised ads (on);
    alice in Germany, who said yes and whose posts a run used; bob and carol in the US."""
    api(
        server,
        "POST",
        "/v1/purposes",
        "admin",
        json={
            "key": TRAINING,
            "title": "Model training",
            "description": "Your public posts may be used to train our AI models.",
            "defaults": {"EEA": "denied", "*": "granted"},
        },
    )
    api(
        server,
        "PUT",
        f"/v1/purposes/{TRAINING}/notice",
        "admin",
        json={
            "version": "2026-01",
            "text": "We train our assistant on public posts. Private messages are never used.",
            "url": f"{PRODUCT}/privacy/training",
        },
    )
    api(
        server,
        "POST",
        "/v1/purposes",
        "admin",
        json={
            "key": ADS,
            "title": "Personalised ads",
            "description": "Ads chosen from what you post.",
            "defaults": {"*": "granted"},
        },
    )
    api(server, "PUT", "/v1/users/alice", "app", json={"jurisdiction": "DE"})
    api(
        server,
        "PUT",
        f"/v1/users/alice/consents/{TRAINING}",
        "app",
        json={"state": "granted", "notice_version": "2026-01"},
    )
    for user in ("bob", "carol"):
        api(server, "PUT", f"/v1/users/{user}", "app", json={"jurisdiction": "US"})
    head = api(server, "GET", "/v1/changes?limit=1", "pipeline")["head"]
    run = api(
        server,
        "POST",
        "/v1/runs",
        "pipeline",
        json={"name": RUN, "purpose": TRAINING, "as_of": head, "model": "assistant-7b"},
    )
    api(
        server,
        "PUT",
        f"/v1/runs/{run['id']}/members",
        "pipeline",
        content=b"alice\nbob\n",
        headers={"Content-Type": "text/plain"},
    )


@pytest.fixture
def context(browser: Any, server: LiveServer) -> Iterator[Any]:
    """A fresh browser context (no cookies), English, at desktop size."""
    context = browser.new_context(base_url=server.base_url, viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def shots(screenshots: Screenshots) -> Screenshots:
    """The page's screenshots: $CONSENT_SCREENSHOTS/me."""
    return screenshots.into("me")


def open_from_product(page: Any, server: LiveServer, user: str) -> str:
    """Follow a product's link with a fresh token, as the product's own page opens it."""
    token = server.user_token(user)
    page.goto(f"/me?token={token}")
    return token


def events(server: LiveServer, user: str) -> list[dict[str, Any]]:
    """The user's history through the support API."""
    return list(api(server, "GET", f"/v1/users/{user}/events", "support")["events"])


def open_notice(page: Any) -> None:
    """Open model training's notice (a <details>), leaving focus where it was."""
    page.locator("#purpose-model_training summary").click()
    page.evaluate("() => document.activeElement.blur()")


def assert_accessible(page: Any, where: str) -> None:
    """axe-core (bundled with axe-playwright-python, nothing downloaded) finds no violation."""
    results = Axe().run(page)
    assert results.violations_count == 0, f"{where}:\n{results.generate_report()}"


def assert_no_horizontal_scrolling(page: Any, where: str) -> None:
    """The page reflows into the viewport's width: nothing needs scrolling sideways."""
    widths = page.evaluate(
        "() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"{where}: scrollWidth {widths[0]} > clientWidth {widths[1]}"


def focus_by_tab(page: Any, name: str, limit: int = 40) -> None:
    """Press Tab until the control named `name` has focus, checking that focus can be seen.

    Past the last control focus leaves the page for the browser's own (the body is then the
    active element), and the next Tab comes back to the first control, as in any browser.
    """
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => {
                const el = document.activeElement, style = getComputedStyle(el);
                return {text: el.textContent.trim(), outline: style.outlineStyle,
                        width: parseFloat(style.outlineWidth), body: el === document.body};
            }"""
        )
        if focused["body"]:
            continue
        assert focused["outline"] != "none", f"no visible focus on {focused['text']!r}"
        assert focused["width"] >= 2, f"focus outline too thin on {focused['text']!r}"
        if focused["text"] == name:
            return
    raise AssertionError(f"{name!r} was not reached by Tab")


def consent_verify(record: Path, server: LiveServer, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`consent verify RECORD --jwks <the server's JWKS URL>`, as a user would check a record."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_INSTANCE_PATH"] = str(cwd / "instance")
    return subprocess.run(
        [str(CONSENT), "verify", str(record), "--jwks", f"{server.base_url}/.well-known/jwks.json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the way in ----------------------------------------------------------------------------------


def test_a_product_link_opens_the_page_and_the_token_leaves_the_address_bar(
    context: Any, server: LiveServer, shots: Screenshots
) -> None:
    page = context.new_page()
    token = open_from_product(page, server, "alice")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADING)
    assert page.url == f"{server.base_url}/me"
    assert token not in page.url
    assert token not in page.evaluate("() => location.href + document.referrer")
    article = page.locator("#purpose-model_training")
    expect(article.get_by_role("heading", name="Model training")).to_be_visible()
    expect(article.locator(".reason")).to_have_text("On — you turned it on")
    expect(page.get_by_role("heading", name="Training runs that used your data")).to_be_visible()
    expect(page.locator(".runs")).to_contain_text(RUN)
    shots(page, "04-page")


def test_a_link_followed_from_another_site_opens_the_page_too(
    context: Any, server: LiveServer
) -> None:
    page = context.new_page()
    token = server.user_token("alice")
    link = f'<a href="{server.base_url}/me?token={token}">Privacy settings</a>'
    html = f"<!doctype html><html lang='en'><title>Product</title><main>{link}</main></html>"
    page.route(
        f"{PRODUCT}/settings", lambda route: route.fulfill(body=html, content_type="text/html")
    )
    page.goto(f"{PRODUCT}/settings")
    with page.expect_response(lambda r: "token=" in r.url) as exchange:
        page.get_by_role("link", name="Privacy settings").click()
    # Cross-site, the exchange answers with a page of its own that moves on (a redirect would
    # lose the SameSite=Strict cookie it sets).
    assert exchange.value.status == 200
    expect(page).to_have_url(f"{server.base_url}/me")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADING)
    assert token not in page.url


# --- by keyboard alone ---------------------------------------------------------------------------


def test_switching_purposes_off_by_keyboard_alone_records_the_users_own_events(
    context: Any, server: LiveServer
) -> None:
    page = context.new_page()
    open_from_product(page, server, "carol")
    before = len(events(server, "carol"))
    focus_by_tab(page, "Turn off Model training")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator("#reason-model_training")).to_have_text("Off — you turned it off")
    focus_by_tab(page, "Turn off Personalised ads")
    with page.expect_navigation():
        page.keyboard.press(" ")
    expect(page.locator("#reason-ads")).to_have_text("Off — you turned it off")
    expect(page.locator(".history li").first).to_contain_text("You turned Personalised ads Off.")

    recorded = events(server, "carol")[before:]
    assert [
        (e["kind"], e["purpose"], e["after"], e["actor"], e["role"], e["data"]["source"])
        for e in recorded
    ] == [
        ("choice_set", TRAINING, "denied", "user:carol", "user", "self_service"),
        ("choice_set", ADS, "denied", "user:carol", "user", "self_service"),
    ]


def test_every_control_is_reached_by_tab_with_visible_focus(
    context: Any, server: LiveServer
) -> None:
    page = context.new_page()
    open_from_product(page, server, "alice")
    # The last control of the page: every one before it was focused, and showed it, on the way.
    focus_by_tab(page, "Download my consent record")


# --- the signed record ---------------------------------------------------------------------------


def test_the_record_downloads_and_consent_verify_accepts_it_and_refuses_a_tampered_copy(
    context: Any, server: LiveServer, tmp_path: Path
) -> None:
    page = context.new_page()
    open_from_product(page, server, "alice")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my consent record").click()
    record = tmp_path / download.value.suggested_filename
    download.value.save_as(record)
    document = json.loads(record.read_text())
    assert document["subject"]["user_id"] == "alice"

    checked = consent_verify(record, server, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("valid")

    tampered = tmp_path / "tampered.json"
    [training] = [c for c in document["consents"] if c["purpose"]["key"] == TRAINING]
    training["status"] = "dpv:ConsentRefused"
    tampered.write_text(json.dumps(document))
    refused = consent_verify(tampered, server, tmp_path)
    assert refused.returncode != 0
    assert "tampered" in refused.stdout + refused.stderr


# --- refused links -------------------------------------------------------------------------------


def test_an_expired_link_is_refused_with_the_error_page_and_opens_nothing(
    context: Any, server: LiveServer, shots: Screenshots
) -> None:
    page = context.new_page()
    expired = usertokens.mint("alice", USER_TOKEN_SECRET.encode(), minutes=1, now=time.time() - 600)
    response = page.goto(f"/me?token={expired}")
    assert response.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
    expect(page.get_by_role("alert")).to_contain_text("open your privacy settings again")
    shots(page, "05-link-expired")
    page.goto("/me")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Open your privacy settings from the app"
    )


def test_a_link_already_used_is_refused_in_another_browser(
    browser: Any, context: Any, server: LiveServer
) -> None:
    first = context.new_page()
    token = open_from_product(first, server, "alice")
    expect(first.get_by_role("heading", level=1)).to_have_text(HEADING)
    other = browser.new_context(base_url=server.base_url, locale="en-US")
    try:
        page = other.new_page()
        response = page.goto(f"/me?token={token}")
        assert response.status == 401
        expect(page.get_by_role("heading", level=1)).to_have_text("Link already used")
        assert "Model training" not in page.content()
    finally:
        other.close()


def test_a_token_for_another_user_never_shows_the_first_users_data(
    context: Any, server: LiveServer, tmp_path: Path
) -> None:
    page = context.new_page()
    open_from_product(page, server, "alice")
    expect(page.locator(".runs")).to_contain_text(RUN)
    expect(page.locator("#reason-model_training")).to_have_text("On — you turned it on")
    open_from_product(page, server, "bob")
    expect(page.locator("#reason-model_training")).to_have_text("On — the default")
    assert "you turned it on" not in page.content()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my consent record").click()
    saved = tmp_path / "bob.json"
    download.value.save_as(saved)
    assert json.loads(saved.read_text())["subject"]["user_id"] == "bob"


# --- languages -----------------------------------------------------------------------------------


def test_german_appears_with_accept_language_de_and_the_switch_changes_the_language(
    browser: Any, server: LiveServer, shots: Screenshots
) -> None:
    context = browser.new_context(base_url=server.base_url, viewport=NARROW, locale="de-DE")
    try:
        page = context.new_page()
        open_from_product(page, server, "alice")
        expect(page.get_by_role("heading", level=1)).to_have_text(GERMAN_HEADING)
        expect(page.locator("html")).to_have_attribute("lang", "de")
        expect(page.locator("#reason-model_training")).to_have_text(
            "Ein — Sie haben es eingeschaltet"
        )
        expect(page.get_by_role("button", name="Model training ausschalten")).to_be_visible()
        shots(page, "03-page-german-360px")

        switch = page.get_by_role("navigation", name="Sprache")
        switch.get_by_role("link", name="English").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        expect(page.get_by_role("heading", level=1)).to_have_text(HEADING)
        expect(page.locator("html")).to_have_attribute("lang", "en")
        [cookie] = [c for c in context.cookies() if c["name"] == "consent_me_lang"]
        assert (cookie["value"], cookie["path"], cookie["sameSite"], cookie["httpOnly"]) == (
            "en",
            "/me",
            "Strict",
            True,
        )
        page.goto("/me")  # the choice outlasts the request, whatever Accept-Language says
        expect(page.get_by_role("heading", level=1)).to_have_text(HEADING)
        page.get_by_role("navigation", name="Language").get_by_role("link", name="Deutsch").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(GERMAN_HEADING)
    finally:
        context.close()


# --- accessibility -------------------------------------------------------------------------------


def test_axe_core_finds_no_violation_on_any_page(
    browser: Any, context: Any, server: LiveServer, shots: Screenshots
) -> None:
    page = context.new_page()
    page.goto("/me")
    assert_accessible(page, "the page without a session")
    shots(page, "06-open-from-the-app")

    open_from_product(page, server, "alice")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADING)
    open_notice(page)
    assert_accessible(page, "the page")

    expired = usertokens.mint("bob", USER_TOKEN_SECRET.encode(), minutes=1, now=time.time() - 600)
    page.goto(f"/me?token={expired}")
    assert_accessible(page, "the error page")

    page.goto("/me?lang=de")
    expect(page.get_by_role("heading", level=1)).to_have_text(GERMAN_HEADING)
    assert_accessible(page, "the German page")
    page.goto("/me?lang=en")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    assert_accessible(page, "the signed-out page")

    # The page a link from another site lands on first: its onward navigation is held (a 204
    # leaves a document in place) so that axe sees it.
    token = server.user_token("carol")
    html = (
        f'<!doctype html><title>Product</title><a href="{server.base_url}/me?token={token}">Go</a>'
    )
    page.route(f"{PRODUCT}/", lambda route: route.fulfill(body=html, content_type="text/html"))
    page.route(f"{server.base_url}/me", lambda route: route.fulfill(status=204))
    page.goto(f"{PRODUCT}/")
    page.get_by_role("link", name="Go").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Opening your privacy settings…")
    assert_accessible(page, "the continue page")


# --- reflow --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewport", "scale", "shot"),
    [(NARROW, 1, "01-page-360px"), (ZOOMED, 2, "02-page-200-percent-zoom")],
    ids=["360 px wide", "200 % zoom"],
)
def test_the_page_reflows_without_horizontal_scrolling(
    browser: Any,
    server: LiveServer,
    shots: Screenshots,
    viewport: dict[str, int],
    scale: int,
    shot: str,
) -> None:
    for locale, heading in (("en-US", HEADING), ("de-DE", GERMAN_HEADING)):
        context = browser.new_context(
            base_url=server.base_url, viewport=viewport, device_scale_factor=scale, locale=locale
        )
        try:
            page = context.new_page()
            open_from_product(page, server, "alice")
            expect(page.get_by_role("heading", level=1)).to_have_text(heading)
            open_notice(page)
            assert_no_horizontal_scrolling(page, f"{shot} ({locale})")
            if locale == "en-US":
                shots(page, shot)
            page.goto(f"/me?token={usertokens.mint('x', b'wrong' * 8, minutes=5)}")
            assert_no_horizontal_scrolling(page, f"the error page, {shot} ({locale})")
        finally:
            context.close()
