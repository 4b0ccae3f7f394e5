"""Browser fixtures: one headless Debian chromium per session, one live server per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer, live_server

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The system chromium, headless, shared by every browser test."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs pip install -e '.[dev]'")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real gunicorn server for the module's tests, on its own database."""
    with live_server(tmp_path_factory.mktemp("console-live")) as live:
        yield live


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    """A fresh page in a fresh context: no cookies from other tests."""
    context = browser.new_context(base_url=server.base_url, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


class Screenshots:
    """Saves a PNG of a page when CONSENT_SCREENSHOTS names a directory (make screenshots), in
    one sub-directory per part of the product: docs/console, docs/me."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def into(self, part: str) -> Screenshots:
        """The same, saving into the sub-directory `part`."""
        return Screenshots(self.directory / part if self.directory else None)

    def __call__(self, page: Any, name: str) -> None:
        """Save the whole page as NAME.png, if screenshots are wanted."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.directory / f"{name}.png"), full_page=True)


@pytest.fixture(scope="session")
def screenshots() -> Screenshots:
    """Take screenshots under $CONSENT_SCREENSHOTS, or do nothing."""
    return Screenshots(os.environ.get("CONSENT_SCREENSHOTS"))


@pytest.fixture(scope="session")
def screenshot(screenshots: Screenshots) -> Screenshots:
    """The console's screenshots: $CONSENT_SCREENSHOTS/console."""
    return screenshots.into("console")
