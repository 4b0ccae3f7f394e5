"""Request guards shared by views: who may call (401, 403), then what body they may send (415).

API keys reach everything but /v1/me; a user token reaches /v1/me (and /me) only, as its own
user, who is never named in a path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request

from service.domain.errors import Forbidden, UnsupportedMediaType
from service.ledger.keys import authenticate, bearer_token, cached_key
from service.ledger.self_service import user_actor
from service.ledger.transaction import Actor
from service.web import ratelimit, usertokens
from service.web.usertokens import UserToken, looks_like_user_token

F = TypeVar("F", bound=Callable[..., Any])

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON = ("application/json",)


def current_actor() -> Actor:
    """The actor authenticated for this request."""
    return cast(Actor, g.actor)


def current_user() -> UserToken:
    """The user whose token authenticated this /v1/me request."""
    return cast(UserToken, g.user_token)


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
            header = request.headers.get("Authorization")
            refuse_user_token(header)
            actor = authenticate(header, cached_key)
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


def refuse_user_token(header: str | None) -> None:
    """Refuse a user token where an API key is needed: 403 if it verifies, else 401."""
    if header and "." in header:  # API keys hold no dot: nothing more to do for them
        token = bearer_token(header)
        if looks_like_user_token(token):
            usertokens.verify(token)
            raise Forbidden(
                "A user token reaches only /v1/me and /me; this endpoint takes an API key."
            )


def requires_user(body: tuple[str, ...] = JSON) -> Callable[[F], F]:
    """Let a view run only for a valid user token, as that user (actor `user:<id>`, role user).

    An API key is refused (403): /v1/me acts for the user themselves, whom only their token
    names. The user's own rate limit is counted once the token is verified, so nobody can spend
    another user's allowance with forged tokens.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization")
            token = bearer_token(header, "a user token")
            if not looks_like_user_token(token):
                authenticate(header, cached_key)  # 401 for what is no key either
                raise Forbidden(
                    "/v1/me answers to a user token (a JWT the product mints for the signed-in "
                    "user), never to an API key."
                )
            user = usertokens.verify(token)
            ratelimit.check_user(user.user_id)
            g.user_token = user
            g.actor = user_actor(user.user_id, g.get("request_id"))
            require_body_type(body)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
