"""A user's consent record as JSON-LD in W3C DPV terms, following ISO/IEC TS 27560 (pure).

The record is built from what /v1/me answers (the user's decisions in plain words) and their
history, as of one ledger seq; service.ledger.self_service.own_record signs it. Names are plain
JSON keys, each given its IRI by the `@context`: DPV's where DPV has one (the record, the data
subject, purpose, legal basis, consent status, notice, jurisdiction), the ledger's own
(`cl:`, under CONTEXT's namespace) for the rest. The events and the signature's `proof` are
JSON literals (`@json`): kept exactly as the ledger wrote them, never reinterpreted as graph.

Consent status (dpv:hasConsentStatus), for a purpose whose legal basis is consent: the user's
own grant is dpv:ConsentGiven; their own denial (or their browser's GPC signal) is
dpv:ConsentWithdrawn after an earlier grant and dpv:ConsentRefused otherwise; anything else (a
default, a support override, an erased account, an order) is dpv:ConsentUnknown, the decision's
`basis` and `explanation` saying what applies. A purpose resting on legitimate interest has no
consent status but an objection status of the ledger's own: cl:ObjectionRaised when the user
turned it off, cl:NoObjection otherwise; a purpose not offered in the user's jurisdiction is
cl:NotOffered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

DPV: Final = "https://w3id.org/dpv#"
# The ledger's own terms: a URN, since no document is published at an http IRI for them.
OWN_TERMS: Final = "urn:consent-ledger:terms#"
RECORD_TYPE: Final = "dpv:ConsentRecord"

CONTEXT: Final[Mapping[str, Any]] = {
    "dpv": DPV,
    "cl": OWN_TERMS,
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dcterms": "http://purl.org/dc/terms/",
    "issued": {"@id": "dcterms:issued", "@type": "xsd:dateTime"},
    "as_of": {"@id": "cl:asOfSeq", "@type": "xsd:integer"},
    "issuer": {"@id": "dcterms:creator"},
    "subject": {"@id": "dpv:hasDataSubject"},
    "user_id": {"@id": "cl:userId"},
    "jurisdiction": {"@id": "dpv:hasJurisdiction"},
    "erased": {"@id": "cl:erased", "@type": "xsd:boolean"},
    "consents": {"@id": "cl:hasConsent", "@container": "@set"},
    "purpose": {"@id": "dpv:hasPurpose"},
    "key": {"@id": "cl:purposeKey"},
    "title": {"@id": "dcterms:title"},
    "description": {"@id": "dcterms:description"},
    "status": {"@id": "dpv:hasConsentStatus", "@type": "@vocab"},
    "objection": {"@id": "cl:hasObjectionStatus", "@type": "@vocab"},
    "legal_basis": {"@id": "dpv:hasLegalBasis", "@type": "@vocab"},
    "notice": {"@id": "dpv:hasNotice"},
    "version": {"@id": "dcterms:hasVersion"},
    "text": {"@id": "cl:text"},
    "url": {"@id": "dcterms:source", "@type": "@id"},
    "allowed": {"@id": "cl:allowed", "@type": "xsd:boolean"},
    "state": {"@id": "cl:state"},
    "basis": {"@id": "cl:basis"},
    "explanation": {"@id": "cl:explanation", "@type": "@json"},
    "events": {"@id": "cl:events", "@type": "@json"},
    "proof": {"@id": "cl:proof", "@type": "@json"},
}

LEGAL_BASES: Final[Mapping[str, str]] = {
    "consent": "dpv:Consent",
    "legitimate_interest": "dpv:LegitimateInterest",
    "not_offered": "cl:NotOffered",
}
GIVEN, REFUSED, WITHDRAWN, UNKNOWN = (
    "dpv:ConsentGiven",
    "dpv:ConsentRefused",
    "dpv:ConsentWithdrawn",
    "dpv:ConsentUnknown",
)
CHOICE_SET = "choice_set"
OBJECTED, NOT_OBJECTED = "cl:ObjectionRaised", "cl:NoObjection"
# The ledger's decision about the purpose when its legal basis is not consent.
NOT_OFFERED = "cl:NotOffered"


def _granted_before(events: Iterable[Mapping[str, Any]], purpose: str) -> bool:
    """Whether the user's history holds a choice of theirs granting the purpose."""
    return any(
        e.get("purpose") == purpose
        and e.get("kind") == CHOICE_SET
        and (e.get("data") or {}).get("state") == "granted"
        for e in events
    )


def status(consent: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The DPV consent status (or the ledger's objection status) of one decision."""
    chose = consent.get("basis") == "choice"  # their own, or their browser's (GPC)
    basis = consent.get("legal_basis") or "consent"
    if basis == "not_offered":
        return {"objection": NOT_OFFERED}
    if basis == "legitimate_interest":
        return {"objection": OBJECTED if chose and not consent.get("allowed") else NOT_OBJECTED}
    if not chose:
        return {"status": UNKNOWN}
    if consent.get("allowed"):
        return {"status": GIVEN}
    return {"status": WITHDRAWN if _granted_before(events, consent["purpose"]) else REFUSED}


def _notice(consent: Mapping[str, Any]) -> dict[str, Any] | None:
    """The notice the decision rests on: the version the user saw when they chose (if recorded),
    and the purpose's current notice."""
    current = consent.get("notice")
    if current is None and consent.get("notice_version") is None:
        return None
    notice: dict[str, Any] = {"version": consent.get("notice_version")}
    if current is not None:
        notice["current"] = {
            "version": current.get("version"),
            "text": current.get("text"),
            "url": current.get("url"),
        }
    return notice


def purpose_entry(
    consent: Mapping[str, Any], events: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """One purpose of the record: its words, legal basis, status, notice, reason and events."""
    purpose = consent["purpose"]
    return {
        "@type": "cl:PurposeConsent",
        "purpose": {
            "@type": "dpv:Purpose",
            "key": purpose,
            "title": consent.get("title", purpose),
            "description": consent.get("description", ""),
        },
        "legal_basis": LEGAL_BASES.get(consent.get("legal_basis") or "consent", "dpv:Consent"),
        **status(consent, events),
        "allowed": bool(consent.get("allowed")),
        "state": consent.get("state"),
        "basis": consent.get("basis"),
        "notice": _notice(consent),
        "explanation": dict(consent.get("explanation") or {}),
        "events": [dict(e) for e in events if e.get("purpose") == purpose],
    }


def build(
    me: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    *,
    issued: str,
    issuer: str,
) -> dict[str, Any]:
    """The (unsigned) record of the user `me` describes (as /v1/me answers), with their events
    up to its as_of; events of the whole account (no purpose) sit at the record's top."""
    as_of = int(me["as_of"])
    kept = [dict(e) for e in events if int(e["seq"]) <= as_of]
    return {
        "@context": dict(CONTEXT),
        "@type": RECORD_TYPE,
        "issued": issued,
        "issuer": issuer,
        "as_of": as_of,
        "subject": {
            "@type": "dpv:DataSubject",
            "user_id": me["user_id"],
            "jurisdiction": me.get("jurisdiction"),
            "erased": bool(me.get("erased")),
        },
        "consents": [purpose_entry(c, kept) for c in me["consents"]],
        "events": [e for e in kept if e.get("purpose") is None],
    }
