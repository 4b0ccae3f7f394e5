"""The fields the API's schemas are made of: states, text, times, as_of, and the contract's own
components (what openapi.yaml states beyond what marshmallow derives)."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any, get_args

import marshmallow as ma
from marshmallow import fields, validate

from service.domain.clock import RFC3339_RE
from service.domain.policy import LEGAL_BASES, STATES, Basis
from service.domain.validation import (
    SELECTORS,
)
from service.reads.asof import SEQ_RE
from service.web.spec import OPENAPI

# Components that no marshmallow schema makes, registered by the ContractPlugin.
COMPONENTS: dict[str, dict[str, Any]] = {
    "State": {"type": "string", "enum": list(STATES)},
    "PolicyDefaults": {
        "type": "object",
        "description": "A state per selector: an ISO 3166-1 alpha-2 country code, a region "
        "group (EEA), or '*'. Selectors in lower case are accepted too and stored in upper "
        "case; each selector at most once.",
        "properties": {selector: "State" for selector in SELECTORS},
        "additionalProperties": False,
        "example": {"EEA": "denied", "*": "granted"},
    },
    "LegalBasis": {"type": "string", "enum": list(LEGAL_BASES)},
    "LegalBases": {
        "type": "object",
        "description": "The purpose's legal basis per selector (as in defaults; most specific "
        "first: country, region group, '*'). Where none matches, the basis is consent. "
        "not_offered: the purpose is not used there at all; every answer is denied with basis "
        "not_offered (choices are still recorded).",
        "properties": {selector: "LegalBasis" for selector in SELECTORS},
        "additionalProperties": False,
        "example": {"EEA": "not_offered", "*": "legitimate_interest"},
    },
}
POLICY_DEFAULTS = {OPENAPI: {"$ref": "#/components/schemas/PolicyDefaults"}}
LEGAL_BASES_DOC = {OPENAPI: {"$ref": "#/components/schemas/LegalBases"}}
# Examples in openapi.yaml, which schemathesis also tries first.
USER_ID_EXAMPLE = "alice"
PURPOSE_KEY_EXAMPLE = "model_training"
NOTICE_VERSION_EXAMPLE = "1"


def _state(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(STATES), **kwargs)


def _state_out(**kwargs: Any) -> fields.String:
    return fields.String(metadata={"enum": list(STATES)}, **kwargs)


def _basis() -> fields.String:
    return fields.String(metadata={"enum": list(get_args(Basis))})


def _legal_basis(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.OneOf(LEGAL_BASES), **kwargs)


def _legal_basis_out(description: str | None = None) -> fields.String:
    metadata: dict[str, Any] = {"enum": list(LEGAL_BASES)}
    if description:
        metadata["description"] = description
    return fields.String(metadata=metadata)


def _timestamp(**kwargs: Any) -> fields.String:
    return fields.String(metadata={"format": "date-time"}, **kwargs)


_CONTROL_CHARS = "\\x00-\\x1f\\x7f"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
# What Text admits, as openapi.yaml says it (lone surrogates are refused too, but no ECMA
# regex can name them, and no JSON encoder sends them unescaped).
ONE_LINE_PATTERN = f"^[^{_CONTROL_CHARS}]*$"
MULTILINE_PATTERN = "^[^\\x00]*$"
MAX_SEQ = 2**63 - 1


class Text(fields.String):
    """A string the database can store: no NUL bytes or lone surrogates, and on one line unless
    multiline (where tabs and newlines are fine)."""

    def __init__(self, *, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiline = multiline
        if not any(isinstance(v, validate.Regexp) for v in self.validators):
            # A field with a pattern of its own documents that one (apispec takes the first).
            pattern = MULTILINE_PATTERN if multiline else ONE_LINE_PATTERN
            self.metadata = {"pattern": pattern, **self.metadata}

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


# An as_of as text: a seq or an RFC 3339 time as the ledger reads them (service.reads.asof), or
# empty for the head. The time's date must exist too, so that branch is also a date-time.
AS_OF_RE = re.compile(f"^(?:{SEQ_RE.pattern}|{RFC3339_RE.pattern})?$")
AS_OF_ERROR = "Must be a seq or an RFC 3339 time with an offset or Z."
AS_OF_BRANCHES = {"anyOf": [{"pattern": f"^(?:{SEQ_RE.pattern})?$"}, {"format": "date-time"}]}
MAX_AS_OF = 10**19 - 1  # the largest seq SEQ_RE reads


class AsOfField(fields.Field):  # type: ignore[type-arg]
    """A seq (integer or digit string) or an RFC 3339 time, kept as text for the ledger."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ma.ValidationError("Must be a seq or an RFC 3339 time.")
        text = str(value)
        if AS_OF_RE.fullmatch(text) is None:
            raise ma.ValidationError(AS_OF_ERROR)
        return text


AS_OF_DOC = {
    "description": "A seq, or an RFC 3339 time; omitted means the ledger head. A seq beyond "
    "the head, or a time not yet past, is a 422: its answer could still change.",
    "example": "42",
    OPENAPI: AS_OF_BRANCHES,
}
# In a JSON body a seq may also be a number.
AS_OF_BODY_DOC = {
    "description": AS_OF_DOC["description"],
    "example": 42,
    OPENAPI: {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_AS_OF},
            {"type": "string", "pattern": AS_OF_RE.pattern, **AS_OF_BRANCHES},
        ]
    },
}
