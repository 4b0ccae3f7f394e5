"""HTTP API v1: thin flask-smorest views over the capability modules."""

from __future__ import annotations

from service.runtime.extensions import api
from service.web.api import health, pipeline, purposes, runs, users


def register_blueprints() -> None:
    """Register every blueprint on the Api."""
    for module in (health, purposes, users, pipeline, runs):
        api.register_blueprint(module.blp)
