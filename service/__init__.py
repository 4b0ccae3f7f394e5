"""Consent Ledger: the Flask application factory."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request

from service.readindex import follow
from service.runtime import config as config_module
from service.runtime import database, extensions
from service.runtime.database import engine_options
from service.runtime.extensions import db, migrate
from service.runtime.readiness import MIGRATIONS_DIR
from service.web import cors, logs, metrics, problems, ratelimit, usertokens
from service.web.fields import COMPONENTS
from service.web.spec import ContractPlugin

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the app from the environment, with `config` overriding it (tests pass theirs)."""
    app = Flask(
        __name__, instance_path=config_module.instance_path(), instance_relative_config=True
    )
    app.config.update(config_module.from_environ(app.instance_path))
    if config:
        app.config.update(config)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **engine_options(
            app.config["SQLALCHEMY_DATABASE_URI"], app.config["CONSENT_DB_TIMEOUT_SECONDS"]
        ),
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    }
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", _spec_options())
    _ensure_sqlite_dir(app.config["SQLALCHEMY_DATABASE_URI"])

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    database.init_app(app)
    extensions.api.init_app(app, spec_kwargs={"extra_plugins": [ContractPlugin(COMPONENTS)]})
    extensions.api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "API key"}
    )
    extensions.api.spec.components.security_scheme(
        "userToken",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A user token: a JWT the product's backend mints for the signed-in "
            "user (sub: their user ID, aud, iat, exp at most 15 minutes after iat, jti); "
            "it reaches only /v1/me and /me.",
        },
    )
    problems.init_app(app)
    metrics.init_app(app)
    logs.init_app(app)
    usertokens.init_app(app)
    cors.init_app(app)
    ratelimit.init_app(app)
    follow.init_app(app)

    from service.web.api import register_blueprints

    register_blueprints(app)

    from service.web import console

    console.init_app(app)

    from service.web import me

    me.init_app(app)

    interval = float(app.config["CONSENT_EXPIRY_SWEEP_SECONDS"])
    if interval > 0 and not app.testing:
        from service.ledger import sweeper

        sweeper.start(app, interval)

    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    return app


def _spec_options() -> dict[str, Any]:
    return {
        "info": {
            "description": "Consent for AI model training as an append-only, "
            "reproducible ledger. Errors are application/problem+json (RFC 9457)."
        },
        "security": [{"bearerAuth": []}],
    }


def _ensure_sqlite_dir(url: str) -> None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


def _assign_request_id() -> None:
    incoming = request.headers.get("X-Request-ID")
    # 16 random hex digits: unique enough to trace a request, and (unlike uuid4 or secrets)
    # no system call on the hot path; a request id is no secret.
    g.request_id = (
        incoming
        if incoming and REQUEST_ID_RE.fullmatch(incoming)
        else f"{random.getrandbits(64):016x}"
    )


def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    return response
