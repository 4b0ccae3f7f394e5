"""Views for training pipelines: lookups, streamed filter, snapshots and the change feed."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, request, stream_with_context
from flask.views import MethodView

from consent_client import wire
from service.reads import changes, decisions, lookups, snapshots
from service.web.api.access import requires
from service.web.api.parsing import Blueprint
from service.web.bodies import streamed_body
from service.web.schemas import (
    AsOfArgsSchema,
    BatchLookupArgsSchema,
    BatchLookupSchema,
    ChangesArgsSchema,
    ChangesSchema,
    LookupArgsSchema,
    LookupSchema,
    SnapshotArgsSchema,
)


def json_response(body: dict[str, Any]) -> Response:
    """A 200 JSON response from a plain dict, skipping marshmallow on the hot read paths."""
    return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")


blp = Blueprint("pipeline", __name__, url_prefix="/v1", description="Pipeline reads")

AS_OF_HEADER_DOC = {
    wire.AS_OF_HEADER: {
        "description": "The seq this answer is as of",
        "schema": {"type": "integer"},
    }
}
FILTER_BODY_TYPES = (wire.TEXT_IDS, wire.ARROW_STREAM)
BINARY = {"type": "string", "format": "binary"}


@blp.route("/lookup/<purpose_key:purpose>/<user_id:user_id>")
class Lookup(MethodView):
    """One decision."""

    @requires("pipeline")
    @blp.arguments(LookupArgsSchema(), location="query")
    @blp.response(200, LookupSchema)
    def get(self, args: dict[str, Any], purpose: str, user_id: str) -> Any:
        """Decide one user ID for a purpose, as of the head or a given seq or time, for
        content of a given time if said."""
        # The hot path: a plain dict straight to JSON, no schema dump (LookupSchema documents it).
        return json_response(lookups.lookup(purpose, user_id, args["as_of"], args["content_time"]))


@blp.route("/lookup/<purpose_key:purpose>")
class BatchLookup(MethodView):
    """Many decisions."""

    @requires("pipeline")
    @blp.arguments(BatchLookupArgsSchema())
    @blp.response(200, BatchLookupSchema)
    def post(self, body: dict[str, Any], purpose: str) -> Any:
        """Split up to 10,000 user IDs into allowed and denied (each for content of its time,
        if content_times are given)."""
        return json_response(
            lookups.batch_lookup(purpose, body["user_ids"], body["as_of"], body["content_times"])
        )


@blp.route("/filter/<purpose_key:purpose>")
class Filter(MethodView):
    """Streamed filter of any number of IDs."""

    @requires("pipeline", body=FILTER_BODY_TYPES)
    @blp.arguments(AsOfArgsSchema(), location="query")
    @blp.doc(
        requestBody={
            # Any number of IDs includes none: an empty body (HTTP cannot tell it from no
            # body) is answered with no IDs.
            "required": False,
            "description": "Newline-separated user IDs (any number, none included), each "
            "optionally followed by a tab and its content's time (RFC 3339 with an offset); "
            "or an Arrow IPC stream with one column of string or int64 IDs, optionally beside "
            f"a timezone-aware timestamp column named `{wire.CONTENT_TIME_COLUMN}` (null: no "
            "time). A time that is not one is a 422 naming its line or row when found before "
            "the answer has begun, else the answer is cut short.",
            "content": {
                wire.TEXT_IDS: {"schema": {"type": "string"}},
                wire.ARROW_STREAM: {"schema": BINARY},
            },
        },
        responses={
            "200": {
                "description": "Text in: the allowed IDs, one per line, in input order. Arrow "
                "in: an Arrow stream with one boolean column `allowed` aligned to the input. "
                "A stream cut short ends without its terminating chunk (or Arrow end marker).",
                "headers": AS_OF_HEADER_DOC,
                "content": {
                    wire.TEXT_IDS: {"schema": {"type": "string"}},
                    wire.ARROW_STREAM: {"schema": BINARY},
                },
            }
        },
    )
    def post(self, args: dict[str, Any], purpose: str) -> Response:
        """Stream IDs in, stream the allowed ones (or an aligned mask) back."""
        # Any number of IDs: the body is streamed, never held.
        stream = streamed_body()
        seq = decisions.seq_checked(purpose, args["as_of"])
        headers = {wire.AS_OF_HEADER: str(seq)}
        if request.mimetype == wire.ARROW_STREAM:
            reader = lookups.open_arrow(stream, with_times=True)
            body = lookups.filter_arrow(purpose, seq, reader)
            mimetype = wire.ARROW_STREAM
        else:
            body = lookups.filter_text(purpose, seq, stream)
            mimetype = wire.TEXT_IDS
        body = lookups.started(body)
        return Response(stream_with_context(body), mimetype=mimetype, headers=headers)


@blp.route("/snapshots/<purpose_key:purpose>")
class Snapshot(MethodView):
    """Every known subject in one set."""

    @requires("pipeline")
    @blp.arguments(SnapshotArgsSchema(), location="query")
    @blp.doc(
        responses={
            "200": {
                "description": "Every subject known as of the seq in the set, with its basis: "
                "CSV (user_id,basis), NDJSON, or Parquet sorted by user_id.",
                "headers": AS_OF_HEADER_DOC,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/vnd.apache.parquet": {"schema": BINARY},
                },
            }
        }
    )
    def get(self, args: dict[str, Any], purpose: str) -> Response:
        """Stream a snapshot for offline joins."""
        seq = decisions.seq_checked(purpose, args["as_of"])
        body = snapshots.stream(purpose, seq, args["set"], args["format"])
        extension = args["format"]
        return Response(
            stream_with_context(body),
            mimetype=wire.SNAPSHOT_MEDIA_TYPES[args["format"]],
            headers={
                wire.AS_OF_HEADER: str(seq),
                "Content-Disposition": f'attachment; filename="{purpose}-{args["set"]}-'
                f'{seq}.{extension}"',
            },
        )


@blp.route("/changes")
class Changes(MethodView):
    """The change feed."""

    @requires("pipeline")
    @blp.arguments(ChangesArgsSchema(), location="query")
    @blp.response(200, ChangesSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """Events after a seq, oldest first, with the cursor for the next page."""
        return changes.changes(args["after"], args["purpose"], args["limit"])
