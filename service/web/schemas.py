"""Marshmallow schemas for the JSON edges of the API; they generate openapi.yaml."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from consent_client.wire import MAX_BATCH, SNAPSHOT_FORMATS, SNAPSHOT_SETS
from service.domain.validation import PURPOSE_KEY_RE


def _state(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(["granted", "denied"]), **kwargs)


def _basis() -> fields.String:
    return fields.String(metadata={"enum": ["erased", "override", "choice", "default", "unknown"]})


def _timestamp(**kwargs: Any) -> fields.String:
    return fields.String(metadata={"format": "date-time"}, **kwargs)


_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
MAX_SEQ = 2**63 - 1


class Text(fields.String):
    """A string the database can store: no NUL bytes or lone surrogates, and on one line unless
    multiline (where tabs and newlines are fine)."""

    def __init__(self, *, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if _NOT_TEXT.search(text):
            raise ma.ValidationError("Must be text without NUL bytes or lone surrogates.")
        if not self.multiline and _CONTROL.search(text):
            raise ma.ValidationError("Must be one line without control characters.")
        return text


class UtcDateTime(fields.AwareDateTime):
    """An RFC 3339 time with an offset, normalised to UTC (and refused if it cannot be)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ma.ValidationError("Out of range once converted to UTC.") from None


class StrictSchema(ma.Schema):
    """Request schemas refuse unknown fields, so a typo is an error rather than ignored."""

    class Meta:
        unknown = ma.RAISE


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
        metadata={"example": {"EEA": "denied", "*": "granted"}},
    )
    unknown_subject = _state(load_default="denied")


class PurposePatchSchema(StrictSchema):
    """Body of PATCH /v1/purposes/{key}: any subset of the changeable fields."""

    title = Text(validate=validate.Length(min=1, max=200))
    description = Text(multiline=True, validate=validate.Length(max=5000))
    defaults = fields.Dict(keys=Text(validate=validate.Length(min=1, max=8)), values=_state())
    unknown_subject = _state()

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("Give at least one field to change.", "_schema")


class PurposeSchema(ma.Schema):
    """A purpose with its default policy."""

    key = fields.String()
    title = fields.String()
    description = fields.String()
    defaults = fields.Dict(keys=fields.String(), values=fields.String())
    unknown_subject = fields.String()
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
        metadata={"description": "ISO 3166-1 alpha-2 country code, or null"},
    )


class OverrideBriefSchema(ma.Schema):
    """The override a decision rests on."""

    id = fields.Integer()
    state = fields.String()
    placed_by = fields.String()
    ticket = fields.String()
    expires_at = _timestamp(allow_none=True)


class LookupSchema(ma.Schema):
    """One pipeline decision."""

    user_id = fields.String()
    purpose = fields.String()
    allowed = fields.Boolean()
    state = fields.String()
    basis = _basis()
    as_of = fields.Integer()


class DecisionSchema(LookupSchema):
    """Effective consent for one user and purpose, with its basis and the seq it is as of,
    and the facts behind it."""

    # Its own field: a shared one would make openapi.yaml share one YAML anchor between both.
    basis = _basis()

    version = fields.Integer(metadata={"description": "Version of the user's choice (0: none)"})
    choice = fields.String(allow_none=True)
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


class ChoiceHeadersSchema(ma.Schema):
    """Conditional and idempotent write headers."""

    class Meta:
        unknown = ma.EXCLUDE

    if_match = Text(data_key="If-Match", validate=validate.Length(max=200))
    idempotency_key = Text(data_key="Idempotency-Key", validate=validate.Length(min=1, max=255))


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

    purpose = fields.String(required=True, validate=validate.Regexp(PURPOSE_KEY_RE))
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
    state = fields.String()
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


class AsOfField(fields.Field):  # type: ignore[type-arg]
    """A seq (integer or digit string) or an RFC 3339 time, kept as text for the ledger."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ma.ValidationError("Must be a seq or an RFC 3339 time.")
        return str(value)


AS_OF_DOC = {
    "description": "A seq, or an RFC 3339 time; omitted means the ledger head.",
    "example": "42",
    "type": "string",
}
# In a JSON body a seq may also be a number.
AS_OF_BODY_DOC = {
    "description": AS_OF_DOC["description"],
    "example": 42,
    "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 64}],
}


class AsOfArgsSchema(ma.Schema):
    """The point in time a read answers as of."""

    class Meta:
        unknown = ma.RAISE

    as_of = Text(load_default=None, validate=validate.Length(max=64), metadata=AS_OF_DOC)


class BatchLookupArgsSchema(StrictSchema):
    """Body of POST /v1/lookup/{purpose}."""

    user_ids = fields.List(
        fields.Raw(allow_none=True, metadata={"type": "string"}),
        required=True,
        metadata={
            "description": f"At most {MAX_BATCH:,} IDs (strings; numeric IDs may be integers)"
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
    purpose = fields.String(load_default=None, validate=validate.Regexp(PURPOSE_KEY_RE))
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
