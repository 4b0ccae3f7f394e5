"""Views for /v1/me: the user's own record, through a user token (never an API key).

No path names a user: every view acts for the user whose token authenticated the request, so a
token for one user can never read or change another's record. A request carrying Sec-GPC: 1
has Global Privacy Control honoured once it has succeeded (service.ledger.self_service).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Response, g, request
from flask.views import MethodView

from service.ledger import choices, self_service
from service.web.api.access import current_actor, current_user, requires_user
from service.web.api.parsing import Blueprint, idempotency_request
from service.web.me_schemas import (
    GPC_HEADERS,
    GPC_RECORDED_HEADER,
    ConsentRecordSchema,
    MeChoicePutSchema,
    MeConsentSchema,
    MeSchema,
)
from service.web.runs_schemas import UserRunsSchema
from service.web.schemas import (
    AsOfArgsSchema,
    ChoiceHeadersSchema,
    DecisionSchema,
    PageArgsSchema,
    UserEventsSchema,
)

F = TypeVar("F", bound=Callable[..., Any])

blp = Blueprint(
    "me",
    __name__,
    url_prefix="/v1/me",
    description="The user's own record, for the product's apps: authenticated by a user token "
    "(a short-lived JWT the product's backend mints for the signed-in user), never an API key. "
    "A request with Sec-GPC: 1 records denied (source gpc) for every purpose that honours GPC "
    "and has no choice of the user's own yet; the Consent-GPC-Recorded header names them.",
)

USER_TOKEN: list[dict[str, list[str]]] = [{"userToken": []}]
ETAG = {"ETag": {"schema": {"type": "string"}}}


def gpc_signal() -> bool:
    """Whether this request carries Global Privacy Control (Sec-GPC: 1, its only value)."""
    return request.headers.get("Sec-GPC", "").strip() == "1"


def honours_gpc(view: F) -> F:
    """Honour Sec-GPC: 1 once the view has succeeded (a refused request records nothing).

    A read is answered again when something was recorded, so that it shows the new choices;
    every answer names what it recorded in the Consent-GPC-Recorded header.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = view(*args, **kwargs)
        if not gpc_signal():
            return result
        recorded = self_service.honour_gpc(current_actor(), current_user().user_id)
        if not recorded:
            return result
        g.gpc_recorded = recorded
        if request.method == "GET":
            result = view(*args, **kwargs)
        body, headers = result if isinstance(result, tuple) else (result, {})
        return body, {**headers, GPC_RECORDED_HEADER: ", ".join(recorded)}

    return cast(F, wrapper)


@blp.route("")
class Me(MethodView):
    """The user's own record."""

    @requires_user()
    @blp.doc(security=USER_TOKEN)
    @blp.response(200, MeSchema, headers=GPC_HEADERS)
    @honours_gpc
    def get(self) -> Any:
        """Read the user's own record: every purpose's decision with its reason in plain words."""
        return {
            **self_service.me_document(current_user().user_id),
            "gpc_recorded": g.get("gpc_recorded", []),
        }


@blp.route("/consents/<purpose_key:purpose>")
class MyConsent(MethodView):
    """The user's own consent for one purpose."""

    @requires_user()
    @blp.doc(security=USER_TOKEN)
    @blp.response(200, MeConsentSchema, headers={**ETAG, **GPC_HEADERS})
    @honours_gpc
    def get(self, purpose: str) -> Any:
        """Read the user's decision for one purpose; the ETag is their choice's version."""
        consent = self_service.own_consent(current_user().user_id, purpose)
        return consent, {"ETag": choices.etag(consent["version"])}

    @requires_user()
    @blp.doc(security=USER_TOKEN)
    @blp.arguments(MeChoicePutSchema())
    @blp.arguments(ChoiceHeadersSchema(), location="headers")
    @blp.response(200, DecisionSchema, headers={**ETAG, **GPC_HEADERS})
    @honours_gpc
    def put(self, body: dict[str, Any], headers: dict[str, Any], purpose: str) -> Any:
        """Set the user's own choice (source self_service); honours If-Match and
        Idempotency-Key exactly as the app's PUT /v1/users/{user_id}/consents/{purpose}."""
        decision = self_service.set_own_choice(
            current_actor(),
            current_user().user_id,
            purpose,
            body["state"],
            notice_version=body["notice_version"],
            if_match=headers.get("if_match"),
            idempotency=idempotency_request(headers, body),
        )
        return decision, {"ETag": choices.etag(decision["version"])}


@blp.route("/events")
class MyEvents(MethodView):
    """The user's own history."""

    @requires_user()
    @blp.doc(security=USER_TOKEN)
    @blp.arguments(PageArgsSchema(), location="query")
    @blp.response(200, UserEventsSchema, headers=GPC_HEADERS)
    @honours_gpc
    def get(self, args: dict[str, Any]) -> Any:
        """Read the user's own history, oldest first, paged by seq."""
        return self_service.own_events(current_user().user_id, args["after"], args["limit"])


@blp.route("/runs")
class MyRuns(MethodView):
    """The training runs that used the user's data."""

    @requires_user()
    @blp.doc(security=USER_TOKEN)
    @blp.arguments(AsOfArgsSchema(), location="query")
    @blp.response(200, UserRunsSchema, headers=GPC_HEADERS)
    @honours_gpc
    def get(self, args: dict[str, Any]) -> Any:
        """List the runs whose members include the user, and whether the user is affected now."""
        return self_service.own_runs(current_user().user_id, args["as_of"])


RECORD_MEDIA_TYPE = "application/ld+json"


def record_response(user_id: str) -> Response:
    """The user's signed consent record as its exact JSON (the signature covers every member),
    offered as a file to keep."""
    record = self_service.own_record(user_id)
    response = Response(
        json.dumps(record, ensure_ascii=False, indent=2), mimetype=RECORD_MEDIA_TYPE
    )
    response.headers["Content-Disposition"] = (
        f'attachment; filename="consent-record-as-of-{record["as_of"]}.jsonld"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/record")
class MyRecord(MethodView):
    """The user's signed consent record."""

    @requires_user()
    @blp.doc(security=USER_TOKEN)
    @blp.response(200, ConsentRecordSchema, headers=GPC_HEADERS, content_type=RECORD_MEDIA_TYPE)
    @honours_gpc
    def get(self) -> Any:
        """Download the user's consent record: JSON-LD in W3C DPV terms following ISO/IEC TS
        27560, with every purpose's status, legal basis, notice version, reason and events,
        signed by the ledger (`proof`; check it with `consent verify`)."""
        return record_response(current_user().user_id)
