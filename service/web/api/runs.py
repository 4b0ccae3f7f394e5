"""Views for training runs: register, record members, read, affected lists, remediations."""

from __future__ import annotations

from typing import Any

from flask import Response, request, stream_with_context
from flask.views import MethodView

from consent_client.wire import ARROW_STREAM, AS_OF_HEADER
from consent_client.wire import TEXT_IDS as TEXT
from service.ledger import runs
from service.reads import lineage, run_streams
from service.reads import runs as run_reads
from service.web.api.access import current_actor, requires
from service.web.api.parsing import Blueprint
from service.web.api.pipeline import BINARY, json_response
from service.web.bodies import streamed_body
from service.web.runs_schemas import (
    LineageSchema,
    RemediationCreateSchema,
    RemediationSchema,
    RunCreateSchema,
    RunListArgsSchema,
    RunPageSchema,
    RunSchema,
    RunStreamArgsSchema,
    UserRunsSchema,
    stream_doc,
)
from service.web.schemas import AsOfArgsSchema

blp = Blueprint("runs", __name__, url_prefix="/v1", description="Training runs")

READERS = ("pipeline", "support")
RUN = "/runs/<int(max=2147483647):run_id>"
MEMBER_TYPES = (TEXT, ARROW_STREAM)


def _streamed(seq: int, body: Any, fmt: str, filename: str) -> Response:
    return Response(
        stream_with_context(body),
        mimetype=run_streams.MEDIA_TYPES[fmt].split(";")[0],
        headers={
            AS_OF_HEADER: str(seq),
            "Content-Disposition": f'attachment; filename="{filename}-{seq}.{fmt}"',
        },
    )


@blp.route("/runs")
class RunCollection(MethodView):
    """Training runs."""

    @requires(*READERS)
    @blp.arguments(RunListArgsSchema(), location="query")
    @blp.response(200, RunPageSchema)
    def get(self, args: dict[str, Any]) -> Any:
        """List runs newest first, with their counts as of the head or a given seq."""
        return run_reads.list_runs(
            args["purpose"], args["model"], args["as_of"], args["limit"], args["before"]
        )

    @requires("pipeline")
    @blp.arguments(RunCreateSchema())
    @blp.response(201, RunSchema)
    def post(self, body: dict[str, Any]) -> Any:
        """Register a run that used the ledger's answer for a purpose as of a seq."""
        return runs.register(current_actor(), **body)


@blp.route(RUN)
class RunItem(MethodView):
    """One training run."""

    @requires(*READERS)
    @blp.arguments(AsOfArgsSchema(), location="query")
    @blp.response(200, RunSchema)
    def get(self, args: dict[str, Any], run_id: int) -> Any:
        """Read a run: its facts, counts as of the head or a given seq, and remediations."""
        return json_response(run_reads.get_run(run_id, args["as_of"]))


@blp.route(f"{RUN}/members")
class RunMemberUpload(MethodView):
    """The distinct user IDs a run used, recorded once."""

    @requires("pipeline", body=MEMBER_TYPES)
    @blp.doc(
        requestBody={
            "required": True,
            "description": "Newline-separated user IDs (any number), or an Arrow IPC stream "
            "with one column of string or int64 IDs. A malformed ID refuses the whole upload "
            "(422, naming its line or row, counted from 1); a second upload is a 409.",
            "content": {TEXT: {"schema": {"type": "string"}}, ARROW_STREAM: {"schema": BINARY}},
        }
    )
    @blp.response(201, RunSchema)
    def put(self, run_id: int) -> Any:
        """Record the members of a run, once."""
        # Any number of IDs, read as a stream.
        return runs.record_members(current_actor(), run_id, streamed_body(), request.mimetype)


@blp.route(f"{RUN}/violations")
class RunViolations(MethodView):
    """Members the ledger did not allow as of the run's as_of."""

    @requires(*READERS)
    @blp.arguments(RunStreamArgsSchema(), location="query")
    @blp.doc(responses={"200": stream_doc("{user_id, basis} (basis as of the run's as_of)")})
    def get(self, args: dict[str, Any], run_id: int) -> Response:
        """Stream the members that were not allowed as of the run's as_of."""
        seq, body = run_streams.violations_stream(run_id, args["as_of"], args["format"])
        return _streamed(seq, body, args["format"], f"run-{run_id}-violations")


@blp.route(f"{RUN}/affected")
class RunAffected(MethodView):
    """Members a later answer denies."""

    @requires(*READERS)
    @blp.arguments(RunStreamArgsSchema(), location="query")
    @blp.doc(
        responses={
            "200": stream_doc(
                "{user_id, basis, seq}: members denied as of the seq, with the event after the "
                "run's as_of that denied them (null: denied since before it)"
            )
        }
    )
    def get(self, args: dict[str, Any], run_id: int) -> Response:
        """Stream the members denied as of the head or a given seq."""
        seq, body = run_streams.affected_stream(run_id, args["as_of"], args["format"])
        return _streamed(seq, body, args["format"], f"run-{run_id}-affected")


@blp.route(f"{RUN}/remediations")
class RunRemediations(MethodView):
    """What was done about a run's affected members."""

    @requires("support")
    @blp.arguments(RemediationCreateSchema())
    @blp.response(201, RemediationSchema)
    def post(self, body: dict[str, Any], run_id: int) -> Any:
        """Declare the members affected up to through_seq handled, with a reason."""
        return runs.remediate(current_actor(), run_id, **body)


@blp.route(f"{RUN}/lineage")
class RunLineage(MethodView):
    """The run for lineage tools."""

    @requires(*READERS)
    @blp.response(200, LineageSchema)
    def get(self, run_id: int) -> Any:
        """The run as an OpenLineage RunEvent (COMPLETE) with a consentLedger input facet."""
        return json_response(lineage.lineage(run_id, request.url_root.rstrip("/")))


@blp.route("/users/<user_id:user_id>/runs")
class UserRuns(MethodView):
    """The runs that used a user's data."""

    @requires(*READERS)
    @blp.arguments(AsOfArgsSchema(), location="query")
    @blp.response(200, UserRunsSchema)
    def get(self, args: dict[str, Any], user_id: str) -> Any:
        """List the runs whose members include the user, and whether the user is affected."""
        return json_response(run_reads.user_runs(user_id, args["as_of"]))
