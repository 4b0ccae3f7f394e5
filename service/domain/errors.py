"""Domain exceptions: every error the service answers on purpose, with its HTTP shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConsentError(Exception):
    """Base of every error the service answers on purpose; carries its HTTP shape."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers) if headers else {}


class BadRequest(ConsentError):
    """The request is malformed in a way no field-level message describes."""


class Unauthorized(ConsentError):
    """No valid API key was presented."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="consent-ledger"'})


class Forbidden(ConsentError):
    """The key is valid but its role may not do this."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ConsentError):
    """The addressed resource does not exist."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ConsentError):
    """The request contradicts the current state (e.g. it exists already, or is erased)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class PreconditionFailed(ConsentError):
    """If-Match named a version that is no longer current."""

    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class PayloadTooLarge(ConsentError):
    """The body, or a list inside it, is larger than allowed."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(ConsentError):
    """The body's Content-Type is not one this endpoint reads."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ValidationFailed(ConsentError):
    """The request is well-formed but its values are not acceptable."""

    status = 422
    slug = "validation-failed"
    title = "Validation failed"


class Unavailable(ConsentError):
    """The ledger cannot answer right now; the client should retry, and must not assume consent."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
