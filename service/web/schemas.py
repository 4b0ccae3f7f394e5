"""Marshmallow schemas for the JSON edges of the API; they generate openapi.yaml."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from consent_client.wire import MAX_BATCH, SNAPSHOT_FORMATS, SNAPSHOT_SETS
from service.domain.validation import (
    JURISDICTION_RE,
    PURPOSE_KEY_RE,
    USER_ID_RE,
)
from service.ledger.choices import IF_MATCH_RE
from service.web.fields import (
    AS_OF_BODY_DOC,
    AS_OF_DOC,
    AS_OF_ERROR,
    AS_OF_RE,
    MAX_SEQ,
    POLICY_DEFAULTS,
    PURPOSE_KEY_EXAMPLE,
    AsOfField,
    StrictSchema,
    Text,
    UtcDateTime,
    _basis,
    _state,
    _state_out,
    _timestamp,
)
from service.web.spec import OPENAPI


class JsonBoolean(fields.Boolean):
    """A JSON true or false, nothing else (marshmallow's Boolean also takes "yes", 1, "on")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ma.ValidationError("Must be true or false.")
        return value


HONOURS_GPC_DOC = {
    "description": "Whether a Sec-GPC: 1 request of a user on /v1/me (or /me) who has no "
    "choice of their own for this purpose records their choice as denied (source gpc)"
}


class PurposeCreateSchema(StrictSchema):
    """Body of POST /v1/purposes."""

    key = fields.String(
        required=True,
        validate=validate.Regexp(PURPOSE_KEY_RE, error="Must match {regex}."),
    )
    title = Text(required=True, validate=validate.Length(min=1, max=200))
    description = Text(multiline=True, load_default="", validate=validate.Length(max=5000))
    defaults = fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=8)),
        values=_state(),
        required=True,
        metadata=POLICY_DEFAULTS,
    )
    unknown_subject = _state(load_default="denied")
    honours_gpc = JsonBoolean(load_default=False, metadata=HONOURS_GPC_DOC)


class PurposePatchSchema(StrictSchema):
    """Body of PATCH /v1/purposes/{key}: any subset of the changeable fields."""

    title = Text(validate=validate.Length(min=1, max=200))
    description = Text(multiline=True, validate=validate.Length(max=5000))
    defaults = fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=8)),
        values=_state(),
        metadata=POLICY_DEFAULTS,
    )
    unknown_subject = _state()
    honours_gpc = JsonBoolean(metadata=HONOURS_GPC_DOC)

    class Meta(StrictSchema.Meta):
        openapi = {"minProperties": 1}

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("Give at least one field to change.", "_schema")


class PurposeSchema(ma.Schema):
    """A purpose with its default policy."""

    key = fields.String()
    title = fields.String()
    description = fields.String()
    defaults = fields.Dict(keys=fields.String(), values=fields.String(), metadata=POLICY_DEFAULTS)
    unknown_subject = _state_out()
    honours_gpc = fields.Boolean(metadata=HONOURS_GPC_DOC)
    version = fields.Integer()
    created_seq = fields.Integer()
    updated_seq = fields.Integer()
    created_at = _timestamp()
    updated_at = _timestamp()


class SubjectPutSchema(StrictSchema):
    """Body of PUT /v1/users/{user_id}."""

    jurisdiction = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "ISO 3166-1 alpha-2 country code (any case), or null",
            "pattern": JURISDICTION_RE.pattern,
        },
    )


class OverrideBriefSchema(ma.Schema):
    """The override a decision rests on."""

    id = fields.Integer()
    state = _state_out()
    placed_by = fields.String()
    ticket = fields.String()
    expires_at = _timestamp(allow_none=True)


class LookupSchema(ma.Schema):
    """One pipeline decision."""

    user_id = fields.String()
    purpose = fields.String()
    allowed = fields.Boolean()
    state = _state_out()
    basis = _basis()
    as_of = fields.Integer()


class DecisionSchema(LookupSchema):
    """Effective consent for one user and purpose, with its basis and the seq it is as of,
    and the facts behind it."""

    # Their own fields: shared ones would make openapi.yaml share YAML anchors between both.
    state = _state_out()
    basis = _basis()

    version = fields.Integer(metadata={"description": "Version of the user's choice (0: none)"})
    choice = _state_out(allow_none=True)
    source = fields.String(allow_none=True)
    default_selector = fields.String(allow_none=True)
    override = fields.Nested(OverrideBriefSchema, allow_none=True)


class SubjectSchema(ma.Schema):
    """A subject and its effective consent for every purpose."""

    user_id = fields.String()
    jurisdiction = fields.String(allow_none=True)
    erased = fields.Boolean()
    as_of = fields.Integer()
    consents = fields.List(fields.Nested(DecisionSchema))


class ChoicePutSchema(StrictSchema):
    """Body of PUT /v1/users/{user_id}/consents/{purpose}."""

    state = _state(required=True)
    source = fields.String(
        load_default="api",
        validate=validate.Regexp(
            r"^[a-z][a-z0-9_]{0,31}$", error="Must be a short lower-case word like 'settings'."
        ),
    )


class IdempotencyHeadersSchema(ma.Schema):
    """The header that makes a write safe to retry."""

    class Meta:
        unknown = ma.EXCLUDE

    idempotency_key = Text(data_key="Idempotency-Key", validate=validate.Length(min=1, max=255))


class ChoiceHeadersSchema(IdempotencyHeadersSchema):
    """Conditional and idempotent write headers."""

    if_match = Text(
        data_key="If-Match",
        metadata={
            "description": "* (any version), or ETags as this API returns them, e.g. "
            '"3", W/"3", comma-separated; 412 unless one names the current version.',
            "pattern": IF_MATCH_RE.pattern,
        },
    )


class EventSchema(ma.Schema):
    """One ledger event."""

    seq = fields.Integer()
    at = _timestamp()
    kind = fields.String()
    user_id = fields.String(allow_none=True)
    purpose = fields.String(allow_none=True)
    before = fields.String(allow_none=True)
    after = fields.String(allow_none=True)
    actor = fields.String()
    role = fields.String()
    reason = fields.String(allow_none=True)
    ticket = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    data = fields.Dict(allow_none=True)


class UserEventsSchema(ma.Schema):
    """A page of one user's history, oldest first."""

    user_id = fields.String()
    as_of = fields.Integer()
    events = fields.List(fields.Nested(EventSchema))
    next_after = fields.Integer()
    has_more = fields.Boolean()


class PageArgsSchema(ma.Schema):
    """Cursor paging by seq."""

    class Meta:
        unknown = ma.RAISE

    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_SEQ))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10000))


class OverrideCreateSchema(StrictSchema):
    """Body of POST /v1/users/{user_id}/overrides."""

    purpose = fields.String(
        required=True,
        validate=validate.Regexp(PURPOSE_KEY_RE),
        metadata={"example": PURPOSE_KEY_EXAMPLE},
    )
    state = _state(required=True)
    reason = Text(multiline=True, required=True, validate=validate.Length(min=3, max=2000))
    ticket = Text(required=True, validate=validate.Length(min=1, max=100))
    expires_at = UtcDateTime(load_default=None, allow_none=True, format="iso")


class LiftArgsSchema(ma.Schema):
    """Query of DELETE /v1/users/{user_id}/overrides/{id}."""

    class Meta:
        unknown = ma.RAISE

    reason = Text(multiline=True, required=True, validate=validate.Length(min=3, max=2000))


class OverrideSchema(ma.Schema):
    """An override, active or not, with its history."""

    id = fields.Integer()
    user_id = fields.String()
    purpose = fields.String()
    state = _state_out()
    reason = fields.String()
    ticket = fields.String()
    placed_by = fields.String()
    placed_at = _timestamp()
    placed_seq = fields.Integer()
    expires_at = _timestamp(allow_none=True)
    status = fields.String(metadata={"enum": ["active", "expired", "lifted"]})
    lifted_at = _timestamp(allow_none=True)
    lifted_seq = fields.Integer(allow_none=True)
    lifted_by = fields.String(allow_none=True)
    lift_reason = fields.String(allow_none=True)


class HealthSchema(ma.Schema):
    """Liveness or readiness."""

    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


class AsOfArgsSchema(ma.Schema):
    """The point in time a read answers as of."""

    class Meta:
        unknown = ma.RAISE

    as_of = Text(
        load_default=None,
        validate=validate.Regexp(AS_OF_RE, error=AS_OF_ERROR),
        metadata=AS_OF_DOC,
    )


class BatchLookupArgsSchema(StrictSchema):
    """Body of POST /v1/lookup/{purpose}."""

    user_ids = fields.List(
        fields.Raw(
            metadata={
                OPENAPI: {
                    "oneOf": [
                        {"type": "string", "pattern": USER_ID_RE.pattern},
                        # A numeric ID as a number: its digits must make a user ID.
                        {"type": "integer", "minimum": 0, "maximum": 10**64 - 1},
                    ]
                }
            }
        ),
        required=True,
        metadata={
            "description": f"At most {MAX_BATCH:,} IDs (strings; numeric IDs may be integers); "
            "more is a 413.",
            "maxItems": MAX_BATCH,
        },
    )
    as_of = AsOfField(load_default=None, metadata=AS_OF_BODY_DOC)


class BatchLookupSchema(ma.Schema):
    """Every distinct input ID in exactly one of allowed or denied."""

    purpose = fields.String()
    as_of = fields.Integer()
    allowed = fields.List(fields.String())
    denied = fields.List(fields.String())


class SnapshotArgsSchema(AsOfArgsSchema):
    """Which set, in which format, as of when."""

    set = fields.String(load_default=SNAPSHOT_SETS[0], validate=validate.OneOf(SNAPSHOT_SETS))
    format = fields.String(
        load_default=SNAPSHOT_FORMATS[0], validate=validate.OneOf(SNAPSHOT_FORMATS)
    )


class ChangesArgsSchema(ma.Schema):
    """Cursor, filter and page size of the change feed."""

    class Meta:
        unknown = ma.RAISE

    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_SEQ))
    purpose = fields.String(
        load_default=None,
        validate=validate.Regexp(PURPOSE_KEY_RE),
        metadata={"example": PURPOSE_KEY_EXAMPLE},
    )
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10000))


class ChangesSchema(ma.Schema):
    """A page of the change feed."""

    events = fields.List(fields.Nested(EventSchema))
    next_after = fields.Integer(metadata={"description": "Pass as `after` to get the next page"})
    has_more = fields.Boolean()
    head = fields.Integer(metadata={"description": "The ledger head when this page was read"})


class AuditArgsSchema(ChangesArgsSchema):
    """Cursor and page size of the audit feed, which has every event and no purpose filter."""

    class Meta:
        unknown = ma.RAISE
        exclude = ("purpose",)
