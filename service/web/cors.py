"""CORS for /v1/me only: the browser apps of CONSENT_CORS_ORIGINS may call it from their pages.

A request from any other origin (the Origin header of a browser's cross-origin request) gets no
CORS headers and is refused outright with a 403, reads and writes alike, before anything is
checked or written: a page of another site cannot make a browser act as the user even with a
token it holds. Requests without an Origin (servers, native apps) and from the ledger's own
origin are not cross-origin and pass. Credentials are never allowed (the token travels in the
Authorization header, not in a cookie), and the allowed origin is always named, never `*`.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request

from service.domain.errors import Forbidden

ME_PREFIX = "/v1/me"
ALLOW_METHODS = "GET, PUT"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, Idempotency-Key, Sec-GPC, X-Request-ID"
EXPOSE_HEADERS = "ETag, Consent-GPC-Recorded, Retry-After, X-Request-ID"
# How long a browser may keep a preflight's answer.
MAX_AGE_SECONDS = 600


class OriginRefused(Forbidden):
    """A browser request to /v1/me from an origin the ledger is not configured to serve."""

    slug = "origin-not-allowed"
    title = "Origin not allowed"


def under_me(path: str) -> bool:
    """Whether a path is /v1/me or below it (and not, say, /v1/members)."""
    return path == ME_PREFIX or path.startswith(ME_PREFIX + "/")


def _preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _allowed(origin: str) -> bool:
    origin = origin.lower()
    own = request.host_url.rstrip("/").lower()
    return origin == own or origin in current_app.config["CONSENT_CORS_ORIGINS"]


def check() -> Response | None:
    """Refuse a disallowed origin on /v1/me; answer an allowed origin's preflight at once."""
    if not under_me(request.path):
        return None
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if not _allowed(origin):
        raise OriginRefused(
            "Browser requests to /v1/me from this origin are refused: it is not one of the "
            "origins this ledger serves (CONSENT_CORS_ORIGINS)."
        )
    g.cors_origin = origin
    if _preflight():
        return Response(status=204)
    return None


def add_headers(response: Response) -> Response:
    """Name the allowed origin on every /v1/me answer to it, errors included."""
    if not under_me(request.path):
        return response
    response.vary.add("Origin")
    origin = g.get("cors_origin")
    if origin is None:
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    if _preflight():
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
    else:
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


def init_app(app: Flask) -> None:
    """Check origins before anything else looks at a /v1/me request (limits, tokens)."""
    app.before_request(check)
    app.after_request(add_headers)
