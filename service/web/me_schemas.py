"""Marshmallow schemas of /v1/me: the user's own record, their decisions in plain words, and the
body of setting their own choice."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from service.domain.explanations import REASONS
from service.web.fields import StrictSchema, _basis, _state, _state_out
from service.web.schemas import DecisionSchema, NoticeSchema, chosen_notice_version

GPC_RECORDED_HEADER = "Consent-GPC-Recorded"
GPC_HEADERS = {
    GPC_RECORDED_HEADER: {
        "description": "The purposes this request recorded as denied (source gpc) because it "
        "carried Sec-GPC: 1 and the user had no choice of their own for them; comma-separated. "
        "Absent when it recorded none.",
        "schema": {"type": "string"},
    }
}


class ExplanationSchema(ma.Schema):
    """Why a decision is what it is, in plain words."""

    code = fields.String(
        metadata={
            "description": "Stable code of the reason, for translations",
            "enum": sorted(REASONS),
        }
    )
    params = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "The values the sentence names (region, country, authority)"},
    )
    text = fields.String(
        metadata={
            "description": "The sentence in English",
            "example": "Off — the default in your region (EEA)",
        }
    )


class MeConsentSchema(DecisionSchema):
    """A decision as the user is shown it: with the purpose's words and the reason."""

    # Their own fields: shared ones would make openapi.yaml share YAML anchors between both.
    state = _state_out()
    basis = _basis()
    choice = _state_out(allow_none=True)

    title = fields.String()
    description = fields.String()
    notice = fields.Nested(
        NoticeSchema,
        allow_none=True,
        metadata={"description": "The purpose's current notice (null: none published)"},
    )
    honours_gpc = fields.Boolean(
        metadata={"description": "Whether Sec-GPC: 1 records denied while the user has no choice"}
    )
    legal_basis = fields.String(
        allow_none=True,
        metadata={"description": "The purpose's legal basis in the user's jurisdiction"},
    )
    explanation = fields.Nested(ExplanationSchema)


class MeSchema(ma.Schema):
    """The user's own record: who they are to the ledger and every purpose's decision."""

    user_id = fields.String()
    jurisdiction = fields.String(allow_none=True)
    erased = fields.Boolean()
    as_of = fields.Integer()
    consents = fields.List(fields.Nested(MeConsentSchema))
    gpc_recorded = fields.List(
        fields.String(),
        metadata={"description": "Purposes this request recorded as denied from Sec-GPC: 1"},
    )


class MeChoicePutSchema(StrictSchema):
    """Body of PUT /v1/me/consents/{purpose}: the user's own choice (source self_service)."""

    state = _state(required=True)
    notice_version = chosen_notice_version()


class ConsentRecordSchema(ma.Schema):
    """The user's consent record: JSON-LD in W3C DPV terms following ISO/IEC TS 27560, signed.

    Documentation only: the view answers the signed record's JSON unchanged, since the
    signature covers every member (`consent verify` checks it against /.well-known/jwks.json).
    """

    context = fields.Dict(
        data_key="@context",
        metadata={"description": "DPV (https://w3id.org/dpv#) and the ledger's own terms"},
    )
    type = fields.String(data_key="@type", metadata={"enum": ["dpv:ConsentRecord"]})
    issued = fields.String(metadata={"description": "When the record was made (RFC 3339)"})
    issuer = fields.String()
    as_of = fields.Integer(metadata={"description": "The ledger seq the record is as of"})
    subject = fields.Dict(
        metadata={"description": "dpv:DataSubject: user_id, jurisdiction, erased"}
    )
    consents = fields.List(
        fields.Dict(),
        metadata={
            "description": "Per purpose: purpose, legal_basis (dpv:Consent, "
            "dpv:LegitimateInterest, cl:NotOffered), status (dpv:ConsentGiven, "
            "dpv:ConsentRefused, dpv:ConsentWithdrawn, dpv:ConsentUnknown) or objection, "
            "notice (version), basis, explanation, events"
        },
    )
    events = fields.List(fields.Dict(), metadata={"description": "Events of the whole account"})
    proof = fields.Dict(
        metadata={
            "description": "The ledger's signature: {type, alg, kid, canonicalization, jwks, jws}"
        }
    )
