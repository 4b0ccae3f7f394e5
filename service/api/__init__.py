"""HTTP API v1: thin flask-smorest views over the capability modules."""

from __future__ import annotations

from flask import Flask, request

from service.api import health, purposes, users
from service.errors import UnsupportedMediaType
from service.extensions import api

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def require_json_body() -> None:
    """Refuse a request body that is not JSON with 415, before anything parses it."""
    if request.method not in BODY_METHODS or request.blueprint is None:
        return
    has_body = bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    )
    if has_body and not request.is_json:
        raise UnsupportedMediaType(
            f"This endpoint reads application/json, not {request.mimetype or 'an untyped body'}."
        )


def register_blueprints(app: Flask) -> None:
    """Register every blueprint on the Api, and the body checks they share."""
    for module in (health, purposes, users):
        api.register_blueprint(module.blp)
    app.before_request(require_json_body)
