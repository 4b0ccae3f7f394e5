"""Sessions of the /me page: a user token exchanged once for a cookie scoped to /me, one hour.

The app has one session interface: MeSessionInterface keeps the console's for /console and adds
the page's own cookie (its own name, path /me, signing salt and lifetime) for /me, so neither
cookie is ever sent to, or accepted by, the other.
"""

from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask, Request, Response, current_app, request, session
from flask.sessions import SecureCookieSession, SessionMixin
from itsdangerous import URLSafeTimedSerializer

from service.domain.clock import utcnow
from service.domain.errors import Unauthorized
from service.runtime.extensions import db
from service.runtime.models import UsedToken
from service.web import usertokens
from service.web.console.sessions import ConsoleSessionInterface

ME_PREFIX = "/me"
COOKIE = "consent_me"
SALT = "consent-me-session"
# DESIGN.md: the session a token opens lasts an hour at most.
MAX_LIFETIME = timedelta(hours=1)


class TokenReused(Unauthorized):
    """A user token whose jti was already exchanged on /me (single use until it expires)."""

    slug = "user-token-reused"
    title = "Link already used"


def on_me(path: str) -> bool:
    """Whether a request path is the /me page's (/me itself or below it)."""
    return path == ME_PREFIX or path.startswith(ME_PREFIX + "/")


def lifetime(app: Flask) -> timedelta:
    """The page's session lifetime: CONSENT_ME_SESSION_MINUTES, never above an hour."""
    minutes = float(app.config.get("CONSENT_ME_SESSION_MINUTES", 60))
    return min(timedelta(minutes=minutes), MAX_LIFETIME)


class MeSessionInterface(ConsoleSessionInterface):
    """The console's sessions for /console, the page's own for /me, none anywhere else."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """For /me, the page's own salt: a console cookie never opens a /me session."""
        if not on_me(request.path):
            return super().get_signing_serializer(app)
        if not app.secret_key:
            return None
        return URLSafeTimedSerializer(
            app.secret_key,
            salt=SALT,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """The page's session on /me, the console's on /console."""
        if not on_me(request.path):
            return super().open_session(app, request)
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        value = request.cookies.get(COOKIE)
        if not value:
            return self.session_class()
        try:
            data = serializer.loads(value, max_age=int(lifetime(app).total_seconds()))
        except Exception:  # itsdangerous.BadSignature and its kin: a cookie we did not sign
            return self.session_class()
        return self.session_class(data)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Write (or delete) the page's cookie on /me, the console's on /console."""
        if not on_me(request.path):
            super().save_session(app, session, response)
            return
        secure = self.get_cookie_secure(app)
        if not session:
            if session.modified:
                response.delete_cookie(
                    COOKIE, path=ME_PREFIX, secure=secure, httponly=True, samesite="Strict"
                )
            return
        response.vary.add("Cookie")
        if not session.modified:
            return
        serializer = self.get_signing_serializer(app)
        assert serializer is not None  # a session was opened, so there is a secret
        started = float(session.get("signed_in_at", time.time()))
        response.set_cookie(
            COOKIE,
            serializer.dumps(dict(session)),
            max_age=max(0, int(started + lifetime(app).total_seconds() - time.time())),
            path=ME_PREFIX,
            secure=secure,
            httponly=True,
            samesite="Strict",
        )


def init_app(app: Flask) -> None:
    """Serve /me sessions beside the console's (console.init_app has set the secret)."""
    app.session_interface = MeSessionInterface()


def redeem(token: str) -> usertokens.UserToken:
    """Verify a user token and spend its jti: a second exchange before it expires is refused.

    The jti is remembered in used_tokens until the token's expiry (rows past it are cleared
    here); the primary key makes two racing exchanges of one token end with one winner.
    """
    verified = usertokens.verify(token)
    now = utcnow()
    try:
        db.session.execute(sa.delete(UsedToken).where(UsedToken.expires_at < now))
        db.session.add(
            UsedToken(jti=verified.jti, user_id=verified.user_id, expires_at=verified.expires_at)
        )
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise TokenReused(
            "This link has been used already. Open your privacy settings again from the app."
        ) from None
    except BaseException:
        db.session.rollback()
        raise
    return verified


def open_session(user: usertokens.UserToken) -> None:
    """Start the page's session for the token's user (ending any session before it)."""
    session.clear()
    session["user_id"] = user.user_id
    session["signed_in_at"] = time.time()


def current_user_id() -> str | None:
    """The user this session is for, or None (a session past its lifetime is ended here)."""
    user_id = session.get("user_id")
    started = session.get("signed_in_at")
    if not isinstance(user_id, str) or not isinstance(started, float):
        return None
    if time.time() - started > lifetime(current_app).total_seconds():
        session.clear()
        return None
    return user_id


def sign_out() -> None:
    """End the session (its cookie is deleted)."""
    session.clear()
