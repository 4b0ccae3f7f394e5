"""Views for /v1/restrictions: admins place and lift orders; every role but `app` reads them."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from service.ledger import restrictions
from service.ledger.transaction import IdempotencyRequest
from service.reads import asof, restriction_impact
from service.reads import restrictions as restriction_reads
from service.web.api.access import current_actor, requires
from service.web.api.parsing import Blueprint
from service.web.restriction_schemas import (
    RestrictionCreateSchema,
    RestrictionImpactSchema,
    RestrictionListArgsSchema,
    RestrictionPreviewSchema,
    RestrictionSchema,
)
from service.web.schemas import AsOfArgsSchema, IdempotencyHeadersSchema, LiftArgsSchema

blp = Blueprint("restrictions", __name__, url_prefix="/v1/restrictions", description="Restrictions")

READERS = ("pipeline", "support")
ITEM = "/<int(max=2147483647):restriction_id>"


@blp.route("")
class RestrictionCollection(MethodView):
    """Orders that deny purposes for the subjects of some jurisdictions."""

    @requires(*READERS)
    @blp.arguments(RestrictionListArgsSchema(), location="query")
    @blp.response(200, RestrictionSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List restrictions newest first, with their status as of the head or a given seq."""
        seq = asof.point_in_time(args["as_of"]).seq
        return restriction_reads.list_all(seq, purpose=args["purpose"], active=args["active"])

    @requires()
    @blp.arguments(RestrictionCreateSchema())
    @blp.arguments(IdempotencyHeadersSchema(), location="headers")
    @blp.response(201, RestrictionSchema)
    def post(self, body: dict[str, Any], headers: dict[str, Any]) -> Any:
        """Place a restriction (admin): it beats every choice and override while active."""
        key = headers.get("idempotency_key")
        window = body["window"]
        return restrictions.place(
            current_actor(),
            authority=body["authority"],
            instrument=body["instrument"],
            purposes=body["purposes"],
            jurisdictions=body["jurisdictions"],
            window=None if window is None else {**window, "from": window["from_"]},
            reason=body["reason"],
            ticket=body["ticket"],
            idempotency=None
            if key is None
            else IdempotencyRequest.of(key, request.method, request.path, body),
        )


@blp.route("/impact")
class RestrictionPreview(MethodView):
    """What placing a restriction would change."""

    @requires()
    @blp.arguments(RestrictionPreviewSchema())
    @blp.response(200, RestrictionImpactSchema)
    def post(self, body: dict[str, Any]) -> Any:
        """Count, per purpose, the subjects whose answer placing this restriction would deny
        now (admin); nothing is written."""
        window = body["window"]
        return restriction_impact.placing(
            body["purposes"],
            body["jurisdictions"],
            None if window is None else {**window, "from": window["from_"]},
        )


@blp.route(ITEM)
class RestrictionItem(MethodView):
    """One restriction."""

    @requires(*READERS)
    @blp.arguments(AsOfArgsSchema(), location="query")
    @blp.response(200, RestrictionSchema)
    def get(self, args: dict[str, Any], restriction_id: int) -> Any:
        """Read a restriction, with its status as of the head or a given seq."""
        seq = asof.point_in_time(args["as_of"]).seq
        return restriction_reads.get(restriction_id, seq)

    @requires()
    @blp.arguments(LiftArgsSchema(), location="query")
    @blp.response(200, RestrictionSchema)
    def delete(self, args: dict[str, Any], restriction_id: int) -> Any:
        """Lift a restriction (admin); the reason is required and the row stays."""
        return restrictions.lift(current_actor(), restriction_id, args["reason"])


@blp.route(f"{ITEM}/impact")
class RestrictionLiftPreview(MethodView):
    """What lifting a restriction would change."""

    @requires()
    @blp.response(200, RestrictionImpactSchema)
    def get(self, restriction_id: int) -> Any:
        """Count, per purpose, the subjects whose answer lifting this restriction would allow
        again now (admin); nothing is written."""
        return restriction_impact.lifting(restriction_id)
