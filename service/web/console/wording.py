"""Decisions and their basis in words, for people rather than pipelines."""

from __future__ import annotations

from typing import Any

from service.domain import events as ev
from service.domain.clock import isoformat
from service.domain.policy import WILDCARD


def selector_words(selector: str | None) -> str:
    """Name a default-policy selector: a country or region code, or everywhere else."""
    if selector is None:
        return "no default matches, so denied"
    if selector == WILDCARD:
        return "default for everywhere else (*)"
    return f"default for {selector}"


def basis_words(decision: dict[str, Any]) -> str:
    """'Denied — default for EEA', 'Granted — override by alice, ticket SUP-1, no expiry', …"""
    state = str(decision["state"]).capitalize()
    basis = decision["basis"]
    if basis == "erased":
        why = "erased"
    elif basis == "unknown":
        why = "unknown subject"
    elif basis == "override":
        o = decision["override"] or {}
        expiry = f"expires {o['expires_at']}" if o.get("expires_at") else "no expiry"
        why = f"override by {o.get('placed_by')}, ticket {o.get('ticket')}, {expiry}"
    elif basis == "not_offered":
        why = "purpose not offered in the user's jurisdiction"
    elif basis == "choice":
        why = f"user's choice ({decision.get('source')}"
        notice = decision.get("notice_version")
        why += f", notice {notice})" if notice else ")"
    else:
        why = selector_words(decision.get("default_selector"))
    if decision.get("legal_basis") == "legitimate_interest":
        why += "; legal basis: legitimate interest"
    return f"{state} — {why}"


def event_words(event: ev.LedgerEvent) -> str:
    """What an event did, in words: 'Jurisdiction DE → FR', 'Override #3 lifted', …"""
    return _user_event_words(event) or _ledger_event_words(event) or event.kind.value


def _user_event_words(event: ev.LedgerEvent) -> str | None:
    """Words for the events about one user."""
    match event:
        case ev.SubjectRegistered(jurisdiction=jurisdiction):
            return f"Registered (jurisdiction {jurisdiction or 'none'})"
        case ev.JurisdictionChanged(previous=previous, jurisdiction=jurisdiction):
            return f"Jurisdiction {previous or 'none'} → {jurisdiction or 'none'}"
        case ev.SubjectErased():
            return "Erased: every purpose denied from here on"
        case ev.ChoiceSet(state=state, source=source, version=version, notice_version=notice):
            shown = f", notice {notice}" if notice else ""
            return f"User's choice: {state} (source {source}, version {version}{shown})"
        case ev.OverridePlaced(override_id=oid, state=state, expires_at=expires):
            until = f", expires {isoformat(expires)}" if expires else ", no expiry"
            return f"Override #{oid} placed: {state}{until}"
        case ev.OverrideLifted(override_id=oid):
            return f"Override #{oid} lifted"
        case ev.OverrideExpired(override_id=oid):
            return f"Override #{oid} expired"
    return None


def _ledger_event_words(event: ev.LedgerEvent) -> str | None:
    """Words for the events about purposes and keys."""
    match event:
        case ev.PurposeCreated(title=title):
            return f"Purpose created: {title}"
        case ev.PolicyChanged() | ev.PurposeUpdated():
            return "Purpose changed: " + ", ".join(sorted(event.after))
        case ev.NoticePublished(purpose=purpose, version=version):
            return f"Notice {version} of {purpose} published"
        case ev.KeyCreated(name=name, role=role):
            return f"Key {name} ({role}) created"
        case ev.KeyRevoked(name=name, role=role):
            return f"Key {name} ({role}) revoked"
    return None
