"""Views for /v1/users: subjects, their choices, history and overrides."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.ledger import choices, overrides, subjects
from service.reads import history
from service.web.api.access import current_actor, requires
from service.web.api.parsing import Blueprint
from service.web.api.parsing import idempotency_request as _idempotency
from service.web.api.pipeline import json_response
from service.web.schemas import (
    ChoiceHeadersSchema,
    ChoicePutSchema,
    DecisionSchema,
    IdempotencyHeadersSchema,
    LiftArgsSchema,
    OverrideCreateSchema,
    OverrideSchema,
    PageArgsSchema,
    SubjectPutSchema,
    SubjectSchema,
    UserEventsSchema,
)

blp = Blueprint("users", __name__, url_prefix="/v1/users", description="Users and their consent")


@blp.route("/<user_id:user_id>")
class UserItem(MethodView):
    """A subject."""

    @requires("app", "support")
    @blp.response(200, SubjectSchema)
    def get(self, user_id: str) -> Any:
        """Read a user and their effective consent per purpose, with its basis."""
        return subjects.get_subject(user_id)

    @requires("app")
    @blp.arguments(SubjectPutSchema())
    @blp.response(200, SubjectSchema)
    def put(self, body: dict[str, Any], user_id: str) -> Any:
        """Register a user, or set their jurisdiction."""
        return subjects.put_subject(current_actor(), user_id, body["jurisdiction"])

    @requires("app")
    @blp.response(200, SubjectSchema)
    def delete(self, user_id: str) -> Any:
        """Erase a user: every purpose is denied from now on; history stays."""
        return subjects.erase(current_actor(), user_id)


@blp.route("/<user_id:user_id>/consents")
class UserConsents(MethodView):
    """A user's effective consent for every purpose."""

    @requires("app", "support")
    @blp.response(200, DecisionSchema(many=True))
    def get(self, user_id: str) -> Any:
        """Read effective consent for every purpose."""
        return choices.get_decisions(user_id)


@blp.route("/<user_id:user_id>/consents/<purpose_key:purpose>")
class UserConsent(MethodView):
    """A user's consent for one purpose."""

    @requires("app", "support")
    @blp.response(200, DecisionSchema, headers={"ETag": {"schema": {"type": "string"}}})
    def get(self, user_id: str, purpose: str) -> Any:
        """Read effective consent for one purpose; the ETag is the choice's version."""
        decision = choices.get_decision(user_id, purpose)
        return decision, {"ETag": choices.etag(decision["version"])}

    @requires("app")
    @blp.arguments(ChoicePutSchema())
    @blp.arguments(ChoiceHeadersSchema(), location="headers")
    @blp.response(200, DecisionSchema, headers={"ETag": {"schema": {"type": "string"}}})
    def put(self, body: dict[str, Any], headers: dict[str, Any], user_id: str, purpose: str) -> Any:
        """Set the user's own choice; honours If-Match and Idempotency-Key."""
        decision = choices.set_choice(
            current_actor(),
            user_id,
            purpose,
            body["state"],
            body["source"],
            notice_version=body["notice_version"],
            if_match=headers.get("if_match"),
            # Without a notice_version the fingerprint is what it was before choices had one.
            idempotency=_idempotency(headers, {k: v for k, v in body.items() if v is not None}),
        )
        # A surge of these is the write path's load: the plain dict straight to JSON, no
        # schema dump (DecisionSchema documents it; a test holds the two equal).
        response = json_response(decision)
        response.headers["ETag"] = choices.etag(decision["version"])
        return response


@blp.route("/<user_id:user_id>/events")
class UserEvents(MethodView):
    """A user's history."""

    @requires("app", "support")
    @blp.arguments(PageArgsSchema(), location="query")
    @blp.response(200, UserEventsSchema)
    def get(self, args: dict[str, Any], user_id: str) -> Any:
        """Read the user's full history, oldest first, paged by seq."""
        return history.user_events(user_id, args["after"], args["limit"])


@blp.route("/<user_id:user_id>/overrides")
class UserOverrides(MethodView):
    """Support overrides for a user."""

    @requires("support")
    @blp.response(200, OverrideSchema(many=True))
    def get(self, user_id: str) -> Any:
        """List every override placed for the user, newest first."""
        return overrides.list_for(user_id)

    @requires("support")
    @blp.arguments(OverrideCreateSchema())
    @blp.arguments(IdempotencyHeadersSchema(), location="headers")
    @blp.response(201, OverrideSchema)
    def post(self, body: dict[str, Any], headers: dict[str, Any], user_id: str) -> Any:
        """Place an override, with reason and ticket, optionally expiring."""
        return overrides.place(
            current_actor(),
            user_id,
            body["purpose"],
            body["state"],
            body["reason"],
            body["ticket"],
            body["expires_at"],
            idempotency=_idempotency(headers, {**body, "expires_at": str(body["expires_at"])}),
        )


@blp.route("/<user_id:user_id>/overrides/<int(max=2147483647):override_id>")
class UserOverride(MethodView):
    """One override."""

    @requires("support")
    @blp.arguments(LiftArgsSchema(), location="query")
    @blp.response(200, OverrideSchema)
    def delete(self, args: dict[str, Any], user_id: str, override_id: int) -> Any:
        """Lift an override; the reason is required and the row stays."""
        return overrides.lift(current_actor(), user_id, override_id, args["reason"])
