"""Keyword-only factories for keys, purposes and users, and request helpers."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.ledger import keys as api_keys
from service.runtime.extensions import db
from service.runtime.models import ROLES
from service.web import usertokens
from tests.conftest import USER_TOKEN_SECRET

DEFAULTS = {"EEA": "denied", "*": "granted"}
PROBLEM = "application/problem+json"
LEDGER_TABLES = (
    "events",
    "subjects",
    "choices",
    "overrides",
    "restrictions",
    "purposes",
    "notices",
    "api_keys",
    "idempotency_records",
    "runs",
    "run_members",
    "run_remediations",
)


def make_key(app: Flask, *, role: str, name: str | None = None) -> str:
    """Create an API key and return its token."""
    with app.app_context():
        _, token = api_keys.create_key(name or f"{role}-key", role)
    return token


def user_token(user_id: str, *, minutes: float = 5) -> str:
    """A user token for user_id, signed with the test apps' HS256 secret."""
    return usertokens.mint(user_id, USER_TOKEN_SECRET.encode(), minutes=minutes)


def bearer(token: str, **extra: str) -> dict[str, str]:
    """Authorization header for a token, plus any extra headers."""
    return {"Authorization": f"Bearer {token}", **extra}


def assert_problem(resp: TestResponse, status: int) -> dict[str, Any]:
    """Assert resp is an RFC 9457 problem with this status, and return its body."""
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == PROBLEM, resp.headers
    body = json.loads(resp.get_data(as_text=True))
    assert isinstance(body, dict)
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"]
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def ledger_state(app: Flask) -> dict[str, int]:
    """The ledger head and the row count of every table: any write at all changes it."""
    with app.app_context(), db.engine.connect() as conn:
        state = {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in LEDGER_TABLES
        }
        state["head"] = conn.execute(sa.text("SELECT seq FROM ledger_head")).scalar_one()
    return state


class Api:
    """A client that knows one key per role, for readable tests."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client
        self.tokens = {role: make_key(app, role=role) for role in ROLES}

    def call(
        self,
        method: str,
        path: str,
        *,
        role: str = "admin",
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        """Send a request as a key of the given role."""
        return self.client.open(
            path,
            method=method,
            json=json,
            headers=bearer(self.tokens[role], **(headers or {})),
            **kwargs,
        )

    def purpose(
        self,
        *,
        key: str = "model_training",
        defaults: dict[str, str] | None = None,
        unknown_subject: str = "denied",
        legal_bases: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a purpose as admin."""
        body = {
            "key": key,
            "title": key.replace("_", " ").title(),
            "defaults": DEFAULTS if defaults is None else defaults,
            "unknown_subject": unknown_subject,
        }
        if legal_bases is not None:
            body["legal_bases"] = legal_bases
        resp = self.call("POST", "/v1/purposes", json=body)
        assert resp.status_code == 201, resp.get_json()
        return dict(resp.get_json())

    def user(self, user_id: str, *, jurisdiction: str | None = None) -> dict[str, Any]:
        """Register a user as the app."""
        resp = self.call(
            "PUT", f"/v1/users/{user_id}", role="app", json={"jurisdiction": jurisdiction}
        )
        assert resp.status_code == 200, resp.get_json()
        return dict(resp.get_json())

    def choose(
        self, user_id: str, state: str, *, purpose: str = "model_training", **headers: str
    ) -> TestResponse:
        """Set a user's choice as the app."""
        return self.call(
            "PUT",
            f"/v1/users/{user_id}/consents/{purpose}",
            role="app",
            json={"state": state, "source": "settings"},
            headers=headers,
        )

    def override(
        self, user_id: str, state: str, *, purpose: str = "model_training", **extra: Any
    ) -> TestResponse:
        """Place an override as support."""
        body = {
            "purpose": purpose,
            "state": state,
            "reason": "regulator request",
            "ticket": "SUP-1",
        }
        return self.call(
            "POST", f"/v1/users/{user_id}/overrides", role="support", json={**body, **extra}
        )

    def consent(self, user_id: str, purpose: str = "model_training") -> dict[str, Any]:
        """Read one decision as support."""
        resp = self.call("GET", f"/v1/users/{user_id}/consents/{purpose}", role="support")
        assert resp.status_code == 200, resp.get_json()
        return dict(resp.get_json())

    def events(self, user_id: str) -> list[dict[str, Any]]:
        """A user's whole history as support."""
        resp = self.call("GET", f"/v1/users/{user_id}/events", role="support")
        assert resp.status_code == 200, resp.get_json()
        return list(resp.get_json()["events"])
