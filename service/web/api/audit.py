"""The admins' audit feed: every event of the ledger, key events included."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.reads import changes
from service.web.api.access import requires
from service.web.api.parsing import Blueprint
from service.web.schemas import AuditArgsSchema, ChangesSchema

blp = Blueprint("audit", __name__, url_prefix="/v1", description="Audit")


@blp.route("/audit")
class Audit(MethodView):
    """The audit feed."""

    @requires()
    @blp.arguments(AuditArgsSchema(), location="query")
    @blp.response(200, ChangesSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Every event after a seq, key events included, oldest first, with the next cursor."""
        return changes.audit(args["after"], args["limit"])
