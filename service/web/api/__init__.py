"""HTTP API v1: thin flask-smorest views over the capability modules."""

from __future__ import annotations

from flask import Flask

from service.runtime.extensions import api
from service.web.api import (
    audit,
    health,
    me,
    paths,
    pipeline,
    purposes,
    restrictions,
    runs,
    signing,
    users,
)


def register_blueprints(app: Flask) -> None:
    """Register every blueprint on the Api, after the path converters its routes use."""
    paths.init_app(app)
    for module in (health, purposes, users, pipeline, audit, runs, restrictions, signing, me):
        api.register_blueprint(module.blp)
