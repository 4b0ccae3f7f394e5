"""Per-key rate limits (flask-limiter): a key that sends too much gets 429 with Retry-After."""

from __future__ import annotations

import time

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded

from service.auth import hash_token
from service.errors import ConsentError, handle_consent_error

# Probes and scrapes come from infrastructure, not keys; limiting them would hide an outage.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class TooManyRequests(ConsentError):
    """The caller's key (or address, without one) sent more than its limit allows."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def rate_key() -> str:
    """Whom a request counts against: its bearer key (by hash), else its remote address.

    Counted before authentication, so a flood of bad keys is limited too (each bad token is
    its own bucket; the address bucket catches requests without any).
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return "key:" + hash_token(token)[:32]
    return "addr:" + (request.remote_addr or "unknown")


def handle_rate_limit(error: RateLimitExceeded) -> Response:
    """Answer a breached limit as problem+json 429, with the seconds until the window resets."""
    limiter: Limiter = current_app.extensions["consent_limiter"]
    current = limiter.current_limit
    reset_in = current.reset_at - time.time() if current is not None else 1.0
    return handle_consent_error(
        TooManyRequests(
            f"Rate limit of {error.description} for this API key exceeded; retry later.",
            retry_after=max(1, int(reset_in)),
        )
    )


def init_app(app: Flask) -> None:
    """Give the app its own limiter (RATELIMIT_* settings) and answer breaches as problems.

    One limiter per app rather than a shared module-level one: flask-limiter keeps its
    storage and its on/off switch on the instance, and tests run many apps in one process.
    """
    limiter = Limiter(
        rate_key,
        app=app,
        default_limits_exempt_when=lambda: request.path in EXEMPT_PATHS,
        # Only our own problem+json 429 carries headers; rate headers on every answer would
        # cost a storage read per request on the hot path.
        headers_enabled=False,
    )
    app.extensions["consent_limiter"] = limiter
    app.register_error_handler(RateLimitExceeded, handle_rate_limit)
