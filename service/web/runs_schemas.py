"""Marshmallow schemas of the training-runs API (service/web/api/runs.py)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from service.domain.runs import (
    REMEDIATION_ACTIONS,
    RUN_NAME_PATTERN,
    RUN_NAME_RULE,
    STREAM_FORMATS,
)
from service.domain.validation import PURPOSE_KEY_RE
from service.web.fields import AS_OF_BODY_DOC, MAX_SEQ, AsOfField, StrictSchema, Text
from service.web.schemas import AsOfArgsSchema
from service.web.spec import OPENAPI

MAX_ROWS = 2**63 - 1


class DatasetSchema(StrictSchema):
    """The dataset a run trained on: where it is, its digest, rows before and after filtering."""

    uri = Text(required=True, validate=validate.Length(min=1, max=2000))
    sha256 = fields.String(
        required=True,
        validate=validate.Regexp(r"^[0-9a-f]{64}$", error="Must be 64 lower-case hex digits."),
    )
    rows_in = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=MAX_ROWS)
    )
    rows_kept = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=MAX_ROWS)
    )


class RunCreateSchema(StrictSchema):
    """Body of POST /v1/runs."""

    name = fields.String(
        required=True,
        validate=validate.Regexp(RUN_NAME_PATTERN, error=f"Must be {RUN_NAME_RULE}."),
        metadata={"example": "llm-7b-2026-12-01"},
    )
    purpose = fields.String(required=True, validate=validate.Regexp(PURPOSE_KEY_RE))
    as_of = AsOfField(
        required=True,
        metadata={
            **AS_OF_BODY_DOC,
            "description": "The seq (or RFC 3339 time) of the ledger answer the run used.",
        },
    )
    model = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))
    dataset = fields.Nested(
        DatasetSchema,
        load_default=None,
        allow_none=True,
        metadata={
            OPENAPI: {
                "allOf": [{"$ref": "#/components/schemas/Dataset"}],
                "nullable": True,
                "default": None,
            }
        },
    )


class DatasetOutSchema(ma.Schema):
    """A run's dataset."""

    uri = fields.String()
    sha256 = fields.String()
    rows_in = fields.Integer(allow_none=True)
    rows_kept = fields.Integer(allow_none=True)


class RemediationCreateSchema(StrictSchema):
    """Body of POST /v1/runs/{id}/remediations."""

    action = fields.String(required=True, validate=validate.OneOf(REMEDIATION_ACTIONS))
    through_seq = fields.Integer(required=True, validate=validate.Range(min=0, max=MAX_SEQ))
    reason = Text(multiline=True, required=True, validate=validate.Length(min=3, max=2000))
    ticket = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=100))


class RemediationSchema(ma.Schema):
    """A remediation of a run."""

    id = fields.Integer()
    run_id = fields.Integer()
    action = fields.String(metadata={"enum": list(REMEDIATION_ACTIONS)})
    through_seq = fields.Integer()
    reason = fields.String()
    ticket = fields.String(allow_none=True)
    recorded_at = fields.String(metadata={"format": "date-time"})
    recorded_seq = fields.Integer()
    recorded_by = fields.String()


def _count(description: str) -> fields.Integer:
    return fields.Integer(allow_none=True, metadata={"description": description})


class RunSchema(ma.Schema):
    """A training run: the answer it used, its members, and what a later answer affects."""

    id = fields.Integer()
    name = fields.String()
    purpose = fields.String()
    as_of = fields.Integer(metadata={"description": "The seq of the ledger answer the run used"})
    model = fields.String(allow_none=True)
    dataset = fields.Nested(DatasetOutSchema, allow_none=True)
    registered_at = fields.String(metadata={"format": "date-time"})
    registered_seq = fields.Integer()
    registered_by = fields.String()
    members = _count("Distinct user IDs the run used (null until recorded)")
    not_allowed = _count("Members not allowed as of the run's as_of: violations")
    affected = _count("Members denied as of counts_as_of")
    outstanding = _count(
        "Affected members denied by events after the last remediation's through_seq"
    )
    members_sha256 = fields.String(allow_none=True)
    members_recorded_seq = fields.Integer(allow_none=True)
    members_recorded_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    remediated_through = fields.Integer(
        allow_none=True, metadata={"description": "through_seq of the last remediation"}
    )
    counts_as_of = fields.Integer(
        metadata={"description": "The seq affected and outstanding are counted as of"}
    )
    remediations = fields.List(fields.Nested(RemediationSchema))


class RunPageSchema(ma.Schema):
    """Runs, newest first."""

    as_of = fields.Integer(metadata={"description": "The seq this page is as of"})
    runs = fields.List(fields.Nested(RunSchema))
    has_more = fields.Boolean()
    next_before = fields.Integer(
        allow_none=True, metadata={"description": "Pass as `before` for the next page"}
    )


class RunListArgsSchema(AsOfArgsSchema):
    """Filters and paging of GET /v1/runs."""

    purpose = fields.String(load_default=None, validate=validate.Regexp(PURPOSE_KEY_RE))
    model = Text(load_default=None, validate=validate.Length(min=1, max=200))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_SEQ))


class RunStreamArgsSchema(AsOfArgsSchema):
    """As of when, in which format."""

    format = fields.String(load_default=STREAM_FORMATS[0], validate=validate.OneOf(STREAM_FORMATS))


class UserRunSchema(ma.Schema):
    """A run that used a user's data."""

    id = fields.Integer()
    name = fields.String()
    purpose = fields.String()
    as_of = fields.Integer(metadata={"description": "The seq of the ledger answer the run used"})
    model = fields.String(allow_none=True)
    affected = fields.Boolean(metadata={"description": "Whether the user is denied as of now"})
    basis = fields.String()


class UserRunsSchema(ma.Schema):
    """The runs whose members include a user, newest first."""

    user_id = fields.String()
    as_of = fields.Integer(metadata={"description": "The seq this answer is as of"})
    runs = fields.List(fields.Nested(UserRunSchema))


class LineageSchema(ma.Schema):
    """An OpenLineage RunEvent (https://openlineage.io/spec/2-0-2/OpenLineage.json)."""

    class Meta:
        unknown = ma.INCLUDE

    eventType = fields.String()
    eventTime = fields.String()
    run = fields.Dict()
    job = fields.Dict()
    inputs = fields.List(fields.Dict())
    outputs = fields.List(fields.Dict())
    producer = fields.String()
    schemaURL = fields.String()


def stream_doc(fields_doc: str) -> dict[str, Any]:
    """The OpenAPI description of a streamed member list."""
    return {
        "description": f"Streamed, one member at a time: {fields_doc}. text: the fields "
        "separated by tabs, one member a line; ndjson: one JSON object a line; parquet: a "
        "Parquet file. Numeric IDs first in numeric order, then the others in byte order.",
        "headers": {
            "Consent-As-Of": {
                "description": "The seq this answer is as of",
                "schema": {"type": "integer"},
            }
        },
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
