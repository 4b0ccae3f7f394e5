"""Request guards shared by views: who may call (401, 403), then what body they may send (415)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request

from service.domain.errors import Forbidden, UnsupportedMediaType
from service.ledger.keys import authenticate, cached_key
from service.ledger.transaction import Actor

F = TypeVar("F", bound=Callable[..., Any])

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON = ("application/json",)


def current_actor() -> Actor:
    """The actor authenticated for this request."""
    return cast(Actor, g.actor)


def require_body_type(accepted: tuple[str, ...]) -> None:
    """Refuse a request body of another media type with 415, before anything parses it."""
    if request.method not in BODY_METHODS:
        return
    has_body = bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    )
    if has_body and not (request.mimetype in accepted or (accepted == JSON and request.is_json)):
        raise UnsupportedMediaType(
            f"This endpoint reads {' or '.join(accepted)}, "
            f"not {request.mimetype or 'an untyped body'}."
        )


def requires(*roles: str, body: tuple[str, ...] = JSON) -> Callable[[F], F]:
    """Let a view run only for keys of these roles (admin may do everything).

    Order matters: a missing key is 401 and a wrong role 403 before the body is even looked at.
    """
    allowed = frozenset(roles) | {"admin"}

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            actor = authenticate(request.headers.get("Authorization"), cached_key)
            if actor.role not in allowed:
                raise Forbidden(
                    f"A {actor.role!r} key may not do this; it needs one of: "
                    f"{', '.join(sorted(allowed))}."
                )
            g.actor = actor
            require_body_type(body)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
