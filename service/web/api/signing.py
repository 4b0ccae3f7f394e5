"""The ledger's signatures: its public keys for anyone checking them, signed snapshot digests."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, request
from flask.views import MethodView

from consent_client import wire
from consent_client.signatures import JWKS_PATH
from service.ledger import signing
from service.reads import signing_keys
from service.web.api.access import requires
from service.web.api.parsing import Blueprint
from service.web.schemas import SnapshotArgsSchema
from service.web.signing_schemas import JwksSchema, SnapshotSignatureSchema

blp = Blueprint("signing", __name__, description="Signatures")

# Short enough that a rotation reaches verifiers soon (who refetch on an unknown kid anyway).
JWKS_MAX_AGE = 300


@blp.route(JWKS_PATH)
class Jwks(MethodView):
    """The ledger's public signing keys."""

    @blp.doc(security=[], responses={"304": {"description": "Not modified (If-None-Match)"}})
    @blp.response(200, JwksSchema)
    def get(self) -> Response:
        """Every key still valid for checking the ledger's signatures (public parts only)."""
        body = json.dumps(signing_keys.jwks(), separators=(",", ":"))
        response = Response(body, mimetype="application/json")
        response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
        response.add_etag()
        response.make_conditional(request)  # a 304 without the body when If-None-Match matches
        return response


@blp.route("/v1/snapshots/<purpose_key:purpose>/signature")
class SnapshotSignature(MethodView):
    """A snapshot's signed digest."""

    @requires("pipeline")
    @blp.arguments(SnapshotArgsSchema(), location="query")
    @blp.response(
        200,
        SnapshotSignatureSchema,
        headers={
            wire.AS_OF_HEADER: {
                "description": "The seq this answer is as of",
                "schema": {"type": "integer"},
            }
        },
    )
    def get(self, args: dict[str, Any], purpose: str) -> Any:
        """Sign the SHA-256 and rows of the snapshot the same parameters get, as of one seq."""
        signed = signing.sign_snapshot(purpose, args["as_of"], args["set"], args["format"])
        return signed, {wire.AS_OF_HEADER: str(signed["as_of"])}
