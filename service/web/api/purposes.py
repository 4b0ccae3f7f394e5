"""Views for /v1/purposes: admins write, every role reads."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.ledger import purposes
from service.web.api.access import current_actor, requires
from service.web.api.parsing import Blueprint
from service.web.schemas import PurposeCreateSchema, PurposePatchSchema, PurposeSchema

blp = Blueprint("purposes", __name__, url_prefix="/v1/purposes", description="Purposes")

ANY_ROLE = ("app", "pipeline", "support")


@blp.route("")
class PurposeCollection(MethodView):
    """The purposes consent is asked for."""

    @requires(*ANY_ROLE)
    @blp.response(200, PurposeSchema(many=True))
    def get(self) -> Any:
        """List purposes with their default policies."""
        return purposes.list_all()

    @requires()
    @blp.arguments(PurposeCreateSchema())
    @blp.response(201, PurposeSchema)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a purpose (admin)."""
        return purposes.create(current_actor(), **body)


@blp.route("/<purpose_key:key>")
class PurposeItem(MethodView):
    """One purpose."""

    @requires(*ANY_ROLE)
    @blp.response(200, PurposeSchema)
    def get(self, key: str) -> Any:
        """Read a purpose and its default policy."""
        return purposes.get(key)

    @requires()
    @blp.arguments(PurposePatchSchema())
    @blp.response(200, PurposeSchema)
    def patch(self, body: dict[str, Any], key: str) -> Any:
        """Change a purpose's title, description or default policy (admin)."""
        return purposes.update(current_actor(), key, body)
