"""The support and admin console at /console: server-rendered pages over the capability modules."""

from __future__ import annotations

from flask import Flask

from service.web.console import sessions
from service.web.console.views import bp, csrf


def init_app(app: Flask) -> None:
    """Give the app its session secret and cookie rules, CSRF protection and the console pages."""
    sessions.init_app(app)
    # Only console forms are checked (from the blueprint's before_request): the JSON API under
    # /v1 authenticates every request with a bearer key and carries no cookie to forge.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)
    app.register_blueprint(bp)
