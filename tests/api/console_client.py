"""A browser-like client of the console over the Flask test client, shared by console tests."""

from __future__ import annotations

import re
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class Console:
    """A browser-like client of the console: it reads each form's CSRF token before posting."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str) -> TestResponse:
        """GET a console page."""
        return self.client.get(path)

    def token(self, path: str = "/console/sign-in") -> str:
        """The CSRF token from a form on `path`."""
        match = CSRF_RE.search(self.get(path).get_data(as_text=True))
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def post(
        self, path: str, data: dict[str, Any], *, form_page: str | None = None
    ) -> TestResponse:
        """POST a form with the CSRF token a page rendered for it."""
        return self.client.post(path, data={"csrf_token": self.token(form_page or path), **data})

    def sign_in(self, token: str) -> TestResponse:
        """Sign in with an API key."""
        return self.post("/console/sign-in", {"token": token})

    def text(self, path: str) -> str:
        """A page's HTML."""
        resp = self.get(path)
        assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
        return resp.get_data(as_text=True)
