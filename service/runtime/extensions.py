"""Flask extensions, created unbound and bound to the app in create_app."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from flask import current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from service.web.problems import ProblemApi

# Named constraints so Alembic can drop and alter them on every backend (SQLite batch mode too).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


T = TypeVar("T")

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = ProblemApi()


def worker_state(name: str, make: Callable[[], T]) -> T:
    """This app's one object kept under `name` (per gunicorn worker), made on first use."""
    found = current_app.extensions.get(name)
    if found is None:
        found = current_app.extensions.setdefault(name, make())
    return cast(T, found)
