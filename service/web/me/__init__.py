"""The user's own page at /me: server-rendered like the console, sharing its security."""

from __future__ import annotations

from flask import Flask

from service.web.me import language, sessions
from service.web.me.views import bp


def init_app(app: Flask) -> None:
    """Serve /me sessions beside the console's, its languages, and the page (after the console)."""
    sessions.init_app(app)
    language.init_app(app)
    app.register_blueprint(bp)
