"""Marshmallow schemas of the restrictions API (service/web/api/restrictions.py).

The scope (purposes, jurisdictions, window) is checked by the domain's own rules
(service/domain/restrictions.py), which name every problem by field; these schemas take the
shapes and document the rules in openapi.yaml.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from service.domain.clock import RFC3339_RULE
from service.domain.policy import TIME_BASES
from service.domain.restrictions import SELECTOR_RULE
from service.domain.validation import PURPOSE_KEY_RE, SELECTOR_RE
from service.web.fields import AS_OF_DOC, AS_OF_ERROR, AS_OF_RE, StrictSchema, Text, _timestamp
from service.web.spec import OPENAPI

_TIME = {OPENAPI: {"type": "string", "format": "date-time"}}


class WindowSchema(StrictSchema):
    """A restriction's time window `[from, to)`, about one time of the content."""

    from_ = fields.Raw(
        data_key="from",
        required=True,
        metadata={**_TIME, "description": f"Inclusive; {RFC3339_RULE}"},
    )
    to = fields.Raw(
        required=True,
        metadata={**_TIME, "description": f"Exclusive, later than from; {RFC3339_RULE}"},
    )
    time_basis = fields.Raw(
        required=True,
        metadata={
            "description": "Which time of the content the window is about",
            OPENAPI: {"type": "string", "enum": list(TIME_BASES)},
        },
    )


class RestrictionScopeSchema(StrictSchema):
    """Which purposes, for which jurisdictions, optionally only inside a window."""

    purposes = fields.List(
        fields.Raw(metadata={OPENAPI: {"type": "string", "pattern": PURPOSE_KEY_RE.pattern}}),
        required=True,
        metadata={"description": "Purpose keys, each once", "minItems": 1, "uniqueItems": True},
    )
    jurisdictions = fields.List(
        fields.Raw(metadata={OPENAPI: {"type": "string", "pattern": SELECTOR_RE.pattern}}),
        required=True,
        metadata={
            "description": f"Selectors, each once: {SELECTOR_RULE} (any case; kept in upper)",
            "minItems": 1,
            "uniqueItems": True,
        },
    )
    window = fields.Nested(
        WindowSchema,
        load_default=None,
        allow_none=True,
        metadata={
            "description": "null: the restriction covers content of any time",
            OPENAPI: {
                "allOf": [{"$ref": "#/components/schemas/Window"}],
                "nullable": True,
                "default": None,
            },
        },
    )


class RestrictionCreateSchema(RestrictionScopeSchema):
    """Body of POST /v1/restrictions."""

    authority = Text(required=True, validate=validate.Length(min=1, max=200))
    instrument = Text(required=True, validate=validate.Length(min=1, max=200))
    reason = Text(multiline=True, required=True, validate=validate.Length(min=3, max=2000))
    ticket = Text(required=True, validate=validate.Length(min=1, max=100))


class RestrictionPreviewSchema(RestrictionScopeSchema):
    """Body of POST /v1/restrictions/impact: a restriction's scope (the rest of a create body
    may come along and is ignored)."""

    authority = Text(load_default=None, validate=validate.Length(max=200))
    instrument = Text(load_default=None, validate=validate.Length(max=200))
    reason = Text(multiline=True, load_default=None, validate=validate.Length(max=2000))
    ticket = Text(load_default=None, validate=validate.Length(max=100))


class WindowOutSchema(ma.Schema):
    """A restriction's window as stored (UTC)."""

    from_ = _timestamp(data_key="from", attribute="from")
    to = _timestamp()
    time_basis = fields.String(metadata={"enum": list(TIME_BASES)})


class RestrictionSchema(ma.Schema):
    """A restriction, active or lifted, with what each of its events changed."""

    id = fields.Integer()
    authority = fields.String()
    instrument = fields.String()
    purposes = fields.List(fields.String())
    jurisdictions = fields.List(fields.String())
    window = fields.Nested(WindowOutSchema, allow_none=True)
    reason = fields.String()
    ticket = fields.String()
    status = fields.String(metadata={"enum": ["active", "lifted"]})
    placed_by = fields.String()
    placed_at = _timestamp()
    placed_seq = fields.Integer(
        metadata={
            "description": "Seq of the first event; purposes[i] is restricted from "
            "placed_seq + i (lifted likewise), where its own event is"
        }
    )
    lifted_by = fields.String(allow_none=True)
    lifted_at = _timestamp(allow_none=True)
    lifted_seq = fields.Integer(allow_none=True)
    lift_reason = fields.String(allow_none=True)
    changed = fields.Dict(
        metadata={
            "description": "Subjects whose answer (without a content time) each event "
            "changed: {placed: {purpose: n}, lifted: {purpose: n} | null}"
        }
    )


class RestrictionListArgsSchema(ma.Schema):
    """Filters of GET /v1/restrictions, and the seq it answers as of."""

    class Meta:
        unknown = ma.RAISE

    purpose = fields.String(load_default=None, validate=validate.Regexp(PURPOSE_KEY_RE))
    active = fields.Boolean(load_default=None, allow_none=True)
    as_of = Text(
        load_default=None,
        validate=validate.Regexp(AS_OF_RE, error=AS_OF_ERROR),
        metadata=AS_OF_DOC,
    )


class PurposeImpactSchema(ma.Schema):
    """What a change does to one purpose's answers."""

    purpose = fields.String()
    changed = fields.Integer()


class RestrictionImpactSchema(ma.Schema):
    """How many known subjects' answers (without a content time) placing or lifting would
    change now, per purpose."""

    action = fields.String(metadata={"enum": ["place", "lift"]})
    id = fields.Integer(metadata={"description": "The restriction to lift"})
    as_of = fields.Integer()
    purposes = fields.List(fields.Nested(PurposeImpactSchema))
    changed = fields.Integer()
