"""The single place where any error becomes application/problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json
from flask_smorest import Api
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from service.domain.errors import ConsentError, Unavailable
from service.ledger.group_commit import BatchFailed

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:consent-ledger:problem:"


def problem_document(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The RFC 9457 body of an error answer."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + (slug or _slug_for(status)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return body


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Build an RFC 9457 problem+json response."""
    body = problem_document(status, title, detail, slug=slug, errors=errors)
    resp = Response(json.dumps(body), status=status, mimetype=PROBLEM_MEDIA_TYPE)
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def _slug_for(status: int) -> str:
    return {
        400: "bad-request",
        401: "unauthorized",
        403: "forbidden",
        404: "not-found",
        405: "method-not-allowed",
        409: "conflict",
        412: "precondition-failed",
        413: "payload-too-large",
        414: "uri-too-long",
        415: "unsupported-media-type",
        417: "expectation-failed",
        422: "validation-failed",
        429: "too-many-requests",
        431: "request-header-fields-too-large",
        501: "not-implemented",
        503: "unavailable",
    }.get(status, "error")


def _flatten_webargs(messages: Mapping[str, Any]) -> dict[str, Any]:
    """Turn webargs' {location: {field: [msg]}} into {field: [msg]}, as domain errors name them."""
    flat: dict[str, Any] = {}
    for location, fields in messages.items():
        if isinstance(fields, Mapping):
            for name, msgs in fields.items():
                flat[name] = msgs
        else:
            flat[location] = fields
    return flat


def _describe(errors: Mapping[str, Any]) -> str:
    parts = []
    for name, msgs in errors.items():
        if isinstance(msgs, list) and msgs and all(isinstance(m, str) for m in msgs):
            parts.append(f"{name}: {' '.join(msgs)}")
        else:
            parts.append(f"{name}: invalid")
    return " ".join(p if p.endswith(".") else p + "." for p in parts)


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, as every error of this API is answered."""

    type = ma.fields.String(metadata={"description": "URI naming the kind of problem"})
    title = ma.fields.String(metadata={"description": "Short summary of the kind of problem"})
    status = ma.fields.Integer(metadata={"description": "HTTP status code"})
    detail = ma.fields.String(metadata={"description": "What went wrong with this request"})
    errors = ma.fields.Dict(metadata={"description": "Field-level messages, keyed by field name"})


class ProblemApi(Api):  # type: ignore[misc]
    """flask-smorest Api whose errors are problem+json, documented with ProblemSchema."""

    ERROR_SCHEMA = ProblemSchema
    DEFAULT_RESPONSE_CONTENT_TYPE: str = "application/json"

    def _register_responses(self) -> None:
        """Document every error response as application/problem+json, as it is served."""
        original = self.DEFAULT_RESPONSE_CONTENT_TYPE
        self.DEFAULT_RESPONSE_CONTENT_TYPE = PROBLEM_MEDIA_TYPE
        try:
            super()._register_responses()
        finally:
            self.DEFAULT_RESPONSE_CONTENT_TYPE = original

    def handle_http_exception(self, error: HTTPException) -> Response:
        """Answer werkzeug and webargs errors (404 routes, 405, 413, 422 ...) as problem+json."""
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        errors = None
        detail = error.description or error.name
        if "messages" in data and isinstance(data["messages"], Mapping):
            errors = _flatten_webargs(data["messages"])
            detail = _describe(errors)
        elif "message" in data:
            detail = str(data["message"])
        headers = dict(data.get("headers") or {})
        if status == 405 and error.get_response().headers.get("Allow"):
            headers["Allow"] = error.get_response().headers["Allow"]
        if status >= 500:
            return problem_response(500, "Internal server error", "An unexpected error occurred.")
        title = "Validation failed" if status == 422 else error.name
        return problem_response(status, title, detail, errors=errors, headers=headers)


def handle_consent_error(error: ConsentError) -> Response:
    """Answer a domain error with its own status, detail and field errors."""
    return problem_response(
        error.status,
        error.title,
        error.detail,
        slug=error.slug,
        errors=error.errors,
        headers=error.headers,
    )


def handle_database_error(error: sa_exc.DBAPIError) -> Response:
    """A database that cannot answer means 503: never a guess, never an allowed answer."""
    log.error("database unavailable: %s", type(error.orig).__name__ if error.orig else error)
    return handle_consent_error(
        Unavailable("The ledger database is unavailable; retry later.", retry_after=2)
    )


def handle_batch_failed(error: BatchFailed) -> Response:
    """A write whose group-committed batch failed: answered as the batch's failure would be."""
    cause = error.__cause__
    if isinstance(cause, sa_exc.OperationalError | sa_exc.InterfaceError):
        return handle_database_error(cause)
    return handle_unexpected(error)


def handle_unexpected(error: Exception) -> Response:
    """Log the traceback, answer a 500 that leaks nothing."""
    log.exception("unhandled error")
    return problem_response(500, "Internal server error", "An unexpected error occurred.")


def init_app(app: Flask) -> None:
    """Register the error handlers, once, for the whole app."""
    app.register_error_handler(ConsentError, handle_consent_error)
    app.register_error_handler(sa_exc.OperationalError, handle_database_error)
    app.register_error_handler(sa_exc.InterfaceError, handle_database_error)
    app.register_error_handler(BatchFailed, handle_batch_failed)
    app.register_error_handler(Exception, handle_unexpected)
