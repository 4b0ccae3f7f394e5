"""Per-key rate limits: a key (or an address, without one) that sends more than its limit gets
429 problem+json with Retry-After. Counting is the `limits` library's (in memory or Redis)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from service.auth import hash_token
from service.errors import ConsentError

# Probes and scrapes come from infrastructure, not keys; limiting them would hide an outage.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class TooManyRequests(ConsentError):
    """The caller's key (or address, without one) sent more than its limit allows."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


@dataclass(frozen=True)
class Limits:
    """One app's limits and the counter they are kept in."""

    items: list[RateLimitItem]
    counter: FixedWindowRateLimiter


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


def check() -> None:
    """Count this request against its key's limits; raise 429 when one is spent.

    A plain hook over `limits` rather than flask-limiter's per-route machinery: the single
    lookup measured 196 us in-process without limits, 293 us with flask-limiter, and one
    fixed-window hit costs about 2 us.
    """
    limits: Limits = current_app.extensions["consent_limits"]
    if request.path in EXEMPT_PATHS:
        return
    key = rate_key()
    for item in limits.items:
        if not limits.counter.hit(item, key):
            reset = limits.counter.get_window_stats(item, key).reset_time
            raise TooManyRequests(
                f"Rate limit of {item} for this API key exceeded; retry later.",
                retry_after=max(1, int(reset - time.time() + 0.999)),
            )


def init_app(app: Flask) -> None:
    """Count every request against CONSENT_RATE_LIMIT, unless it is off."""
    spec = app.config.get("CONSENT_RATE_LIMIT")
    if not spec:
        return
    app.extensions["consent_limits"] = Limits(
        parse_many(spec),
        FixedWindowRateLimiter(storage_from_string(app.config["CONSENT_RATE_LIMIT_STORAGE"])),
    )
    app.before_request(check)
