"""Marshmallow schemas for the JSON edges of the API; they generate openapi.yaml."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from consent_client.wire import MAX_BATCH, SNAPSHOT_FORMATS, SNAPSHOT_SETS
from service.domain.clock import RFC3339_RE, RFC3339_RULE
from service.domain.validation import (
    JURISDICTION_RE,
    NOTICE_TEXT_RE,
    NOTICE_URL_RE,
    NOTICE_VERSION_RE,
    NOTICE_VERSION_RULE,
    PURPOSE_KEY_RE,
    USER_ID_RE,
)
from service.ledger.choices import IF_MATCH_RE
from service.web.fields import (
    AS_OF_BODY_DOC,
    AS_OF_DOC,
    AS_OF_ERROR,
    AS_OF_RE,
    LEGAL_BASES_DOC,
    MAX_SEQ,
    NOTICE_VERSION_EXAMPLE,
    POLICY_DEFAULTS,
    PURPOSE_KEY_EXAMPLE,
    AsOfField,
    StrictSchema,
    Text,
    UtcDateTime,
    _basis,
    _legal_basis,
    _legal_basis_out,
    _state,
    _state_out,
    _timestamp,
)
from service.web.spec import OPENAPI


def _restriction_id() -> fields.Integer:
    return fields.Integer(
        allow_none=True,
        metadata={"description": "The restriction that denies it, when basis is restriction"},
    )


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
    legal_bases = fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=8)),
        values=_legal_basis(),
        load_default=dict,
        metadata=LEGAL_BASES_DOC,
    )
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
    legal_bases = fields.Dict(
        keys=Text(validate=validate.Length(min=1, max=8)),
        values=_legal_basis(),
        metadata=LEGAL_BASES_DOC,
    )
    honours_gpc = JsonBoolean(metadata=HONOURS_GPC_DOC)

    class Meta(StrictSchema.Meta):
        openapi = {"minProperties": 1}

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("Give at least one field to change.", "_schema")


NOTICE_VERSION_FIELD = {
    "description": f"A version of the purpose's notice: {NOTICE_VERSION_RULE}.",
    "example": NOTICE_VERSION_EXAMPLE,
}


def chosen_notice_version() -> fields.String:
    """The optional `notice_version` a choice names (the app's and the user's own)."""
    return fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(NOTICE_VERSION_RE, error=f"Must be {NOTICE_VERSION_RULE}."),
        metadata={
            **NOTICE_VERSION_FIELD,
            "description": "The version of the purpose's notice the user was shown; it must "
            "have been published (PUT /v1/purposes/{key}/notice). Null or absent: not said.",
        },
    )


class NoticePutSchema(StrictSchema):
    """Body of PUT /v1/purposes/{key}/notice: one version of what users are shown."""

    version = fields.String(
        required=True,
        validate=validate.Regexp(NOTICE_VERSION_RE, error=f"Must be {NOTICE_VERSION_RULE}."),
        metadata=NOTICE_VERSION_FIELD,
    )
    text = Text(
        multiline=True,
        required=True,
        validate=[
            validate.Length(min=1, max=20000),
            validate.Regexp(NOTICE_TEXT_RE, error="Must not be blank."),
        ],
    )
    url = Text(
        load_default=None,
        allow_none=True,
        validate=[
            validate.Length(max=2000),
            validate.Regexp(NOTICE_URL_RE, error="Must be an http or https URL."),
        ],
        metadata={"description": "Where the full notice is published (http or https)"},
    )


class NoticeSchema(ma.Schema):
    """One published version of a purpose's notice; never changed once published."""

    purpose = fields.String()
    version = fields.String()
    text = fields.String()
    url = fields.String(allow_none=True)
    published_at = _timestamp()
    published_seq = fields.Integer()
    published_by = fields.String()


class PurposeSchema(ma.Schema):
    """A purpose with its default policy, legal bases and current notice."""

    key = fields.String()
    title = fields.String()
    description = fields.String()
    defaults = fields.Dict(keys=fields.String(), values=fields.String(), metadata=POLICY_DEFAULTS)
    unknown_subject = _state_out()
    legal_bases = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata=LEGAL_BASES_DOC
    )
    notice = fields.Nested(
        NoticeSchema,
        allow_none=True,
        metadata={"description": "The notice version published last (null: none yet)"},
    )
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
    restriction_id = _restriction_id()
    legal_basis = _legal_basis_out(
        "The purpose's legal basis in the subject's jurisdiction as of this answer (consent "
        "where the purpose names none)"
    )
    notice_version = fields.String(
        allow_none=True,
        metadata={
            "description": "When the basis is choice: the notice version the user was shown "
            "when they chose (null if not said)"
        },
    )


class DecisionSchema(LookupSchema):
    """Effective consent for one user and purpose, with its basis and the seq it is as of,
    and the facts behind it."""

    # Their own fields: shared ones would make openapi.yaml share YAML anchors between both.
    state = _state_out()
    basis = _basis()
    restriction_id = _restriction_id()
    legal_basis = _legal_basis_out()
    notice_version = fields.String(
        allow_none=True,
        metadata={
            "description": "The notice version the user was shown when they made their choice "
            "(null: no choice, or none said); shown with the choice whatever the basis"
        },
    )

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
    notice_version = chosen_notice_version()


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


CONTENT_TIME_RE = re.compile(f"^(?:{RFC3339_RE.pattern})$")
CONTENT_TIME_DOC = {
    "description": "The time of the content the answer is for (RFC 3339 with an offset or Z): "
    "a windowed restriction denies a time inside its window, and an answer without a time.",
    "example": "2024-06-01T00:00:00Z",
    OPENAPI: {"format": "date-time"},
}


class LookupArgsSchema(AsOfArgsSchema):
    """The point in time a single lookup answers as of, and the content's time."""

    content_time = Text(
        load_default=None,
        validate=validate.Regexp(CONTENT_TIME_RE, error=f"Must be {RFC3339_RULE}."),
        metadata=CONTENT_TIME_DOC,
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
    content_times = fields.List(
        fields.Raw(
            allow_none=True,
            metadata={OPENAPI: {"type": "string", "format": "date-time", "nullable": True}},
        ),
        load_default=None,
        metadata={
            "description": "The time of each ID's content, aligned with user_ids (null: no "
            "time); an ID sent twice is allowed only if it is for each of its times.",
            "maxItems": MAX_BATCH,
        },
    )


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
