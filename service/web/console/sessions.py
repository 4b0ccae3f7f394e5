"""Console sessions: the secret, cookie rules, and who is signed in (checked per request)."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, Request, Response, current_app, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin

from service.ledger.keys import hash_token
from service.ledger.transaction import Actor
from service.runtime.extensions import db
from service.runtime.models import ApiKey

STAFF_ROLES = frozenset({"support", "admin"})
SECRET_FILE = "console-secret-key"
CONSOLE_PREFIX = "/console"


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions, for the console only, Secure whenever the request is HTTPS.

    The API never uses a session: without this, every pipeline read would build a signing
    serializer and look for a cookie it never has (measured on the single lookup).
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """The console's session; None (Flask's null session) anywhere else."""
        if not request.path.startswith(CONSOLE_PREFIX):
            return None
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Write the cookie for console pages only."""
        if request.path.startswith(CONSOLE_PREFIX):
            super().save_session(app, session, response)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, or when this request is HTTPS."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def persisted_secret(instance_path: str, name: str = SECRET_FILE) -> str:
    """A secret kept in the instance folder under `name`, made once (mode 0600) by whichever
    worker is first.

    The new secret is written to a private temporary file and linked into place, so a second
    worker either loses the race and reads the winner's complete file, or finds it there.
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=folder)  # mkstemp creates it with mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def init_app(app: Flask) -> None:
    """Set the secret key and the session cookie's rules."""
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = app.config.get("CONSENT_SECRET_KEY") or persisted_secret(
            app.instance_path
        )
    hours = float(app.config.get("CONSENT_CONSOLE_SESSION_HOURS", 8))
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=hours)
    app.config["SESSION_COOKIE_NAME"] = "consent_console"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    app.config["SESSION_COOKIE_PATH"] = "/console"
    app.session_interface = ConsoleSessionInterface()


def key_for_token(token: str) -> tuple[int, str, str] | None:
    """(id, name, role) of the active key with this token, or None."""
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(ApiKey.id, ApiKey.name, ApiKey.role).where(
                ApiKey.token_hash == hash_token(token.strip()), ApiKey.revoked_at.is_(None)
            )
        ).one_or_none()
    return None if row is None else (row.id, row.name, row.role)


def active_key(key_id: int) -> tuple[str, str] | None:
    """(name, role) of the key with this id if it is still active, or None."""
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(ApiKey.name, ApiKey.role).where(
                ApiKey.id == key_id, ApiKey.revoked_at.is_(None)
            )
        ).one_or_none()
    return None if row is None else (row.name, row.role)


def sign_in(token: str) -> str | None:
    """Start a session for a support or admin key; return why not, or None on success.

    The cookie holds the key's id, name and role and the sign-in time, never the token.
    """
    key = key_for_token(token) if token.strip() else None
    if key is None:
        return "That key is not valid or has been revoked."
    key_id, name, role = key
    if role not in STAFF_ROLES:
        return f"A {role!r} key cannot use the console; sign in with a support or admin key."
    session.clear()
    session.permanent = True
    session["key_id"] = key_id
    session["signed_in_at"] = time.time()
    return None


def sign_out() -> None:
    """End the session."""
    session.clear()


def current_staff() -> Actor | None:
    """The signed-in staff member, or None (an expired or revoked session is ended here)."""
    key_id = session.get("key_id")
    if not isinstance(key_id, int):
        return None
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    started = session.get("signed_in_at")
    key = active_key(key_id)
    if not isinstance(started, float) or time.time() - started > lifetime or key is None:
        session.clear()
        return None
    name, role = key
    if role not in STAFF_ROLES:
        session.clear()
        return None
    return Actor(name, role, g.get("request_id"))
