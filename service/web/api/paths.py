"""Path parameter converters: each routes any segment and documents the pattern it must match."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from flask import Flask
from werkzeug.routing import BaseConverter

from service.domain.validation import NOTICE_VERSION_RE, PURPOSE_KEY_RE, USER_ID_RE
from service.runtime.extensions import api
from service.web.fields import NOTICE_VERSION_EXAMPLE, PURPOSE_KEY_EXAMPLE, USER_ID_EXAMPLE


class PatternConverter(BaseConverter):
    """A path segment documented in openapi.yaml with its pattern.

    Routing still takes any segment (werkzeug's default): a malformed value reaches the view,
    whose domain check answers a 422 naming the field, rather than a bare 404 for no route.
    """

    pattern: ClassVar[re.Pattern[str]]
    example: ClassVar[str]


class UserIdConverter(PatternConverter):
    """A user ID."""

    pattern = USER_ID_RE
    example = USER_ID_EXAMPLE


class PurposeKeyConverter(PatternConverter):
    """A purpose key."""

    pattern = PURPOSE_KEY_RE
    example = PURPOSE_KEY_EXAMPLE


class NoticeVersionConverter(PatternConverter):
    """A version of a purpose's notice."""

    pattern = NOTICE_VERSION_RE
    example = NOTICE_VERSION_EXAMPLE


CONVERTERS: dict[str, type[PatternConverter]] = {
    "user_id": UserIdConverter,
    "purpose_key": PurposeKeyConverter,
    "notice_version": NoticeVersionConverter,
}


def _parameter_schema(converter: PatternConverter) -> dict[str, Any]:
    return {"type": "string", "pattern": converter.pattern.pattern, "example": converter.example}


# Once per process: the Api keeps its converters and registers them again in each app's spec.
api.register_converter(PatternConverter, _parameter_schema)


def init_app(app: Flask) -> None:
    """Make the converters known to the app's routing; before any route is added."""
    app.url_map.converters.update(CONVERTERS)
