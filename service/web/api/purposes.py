"""Views for /v1/purposes: admins write purposes and publish their notices, every role reads."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from service.ledger import notices, purposes
from service.web.api.access import current_actor, requires
from service.web.api.parsing import Blueprint
from service.web.schemas import (
    NoticePutSchema,
    NoticeSchema,
    PurposeCreateSchema,
    PurposePatchSchema,
    PurposeSchema,
)

blp = Blueprint("purposes", __name__, url_prefix="/v1/purposes", description="Purposes")

ANY_ROLE = ("app", "pipeline", "support")


@blp.route("")
class PurposeCollection(MethodView):
    """The purposes consent is asked for."""

    @requires(*ANY_ROLE)
    @blp.response(200, PurposeSchema(many=True))
    def get(self) -> Any:
        """List purposes with their default policies, legal bases and current notices."""
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
        """Read a purpose, its default policy, legal bases and current notice."""
        return purposes.get(key)

    @requires()
    @blp.arguments(PurposePatchSchema())
    @blp.response(200, PurposeSchema)
    def patch(self, body: dict[str, Any], key: str) -> Any:
        """Change a purpose's title, description, default policy or legal bases (admin)."""
        return purposes.update(current_actor(), key, body)


@blp.route("/<purpose_key:key>/notice")
class PurposeNotice(MethodView):
    """Publishing a purpose's notice."""

    @requires()
    @blp.arguments(NoticePutSchema())
    @blp.response(200, NoticeSchema)
    def put(self, body: dict[str, Any], key: str) -> Any:
        """Publish a version of the purpose's notice (admin).

        A published version never changes: the same version again with the same text and url
        writes nothing and answers it as published; with another text or url it is a 409.
        """
        return notices.publish(current_actor(), key, body["version"], body["text"], body["url"])


@blp.route("/<purpose_key:key>/notices")
class PurposeNotices(MethodView):
    """Every published version of a purpose's notice."""

    @requires(*ANY_ROLE)
    @blp.response(200, NoticeSchema(many=True))
    def get(self, key: str) -> Any:
        """List every version of the purpose's notice, oldest first."""
        return notices.list_for(key)


@blp.route("/<purpose_key:key>/notices/<notice_version:version>")
class PurposeNoticeVersion(MethodView):
    """One version of a purpose's notice."""

    @requires(*ANY_ROLE)
    @blp.response(200, NoticeSchema)
    def get(self, key: str, version: str) -> Any:
        """Read one version of the purpose's notice: what users who chose under it were shown."""
        return notices.get(key, version)
