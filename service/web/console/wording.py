"""Decisions, restrictions and events in words, for people rather than pipelines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from service.domain import events as ev
from service.domain.clock import isoformat
from service.domain.policy import WILDCARD

LEGAL_BASIS_WORDS = {
    "consent": "Consent",
    "legitimate_interest": "Legitimate interest (with a right to object)",
    "not_offered": "Not offered (the purpose is not used there)",
}


def selector_words(selector: str | None) -> str:
    """Name a default-policy selector: a country or region code, or everywhere else."""
    if selector is None:
        return "no default matches, so denied"
    if selector == WILDCARD:
        return "default for everywhere else (*)"
    return f"default for {selector}"


def legal_basis_words(legal_basis: str | None) -> str:
    """'Consent', 'Legitimate interest (with a right to object)', 'Not offered (…)'."""
    return LEGAL_BASIS_WORDS.get(legal_basis or "consent", str(legal_basis))


def time_words(value: str | datetime | None, *, exact: bool = False) -> str:
    """An RFC 3339 time as people read it: '2024-05-01 00:00 UTC', '… 14:03:27 UTC' (to the
    second, or `exact`ly with any fraction, as a window's bounds are shown)."""
    if value is None:
        return "—"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    shown = (isoformat(when) or "").replace("T", " ").removesuffix("Z")
    if when.second == 0 and when.microsecond == 0:
        return shown[:16] + " UTC"
    return (shown if exact else shown[:19]) + " UTC"


def window_words(window: Mapping[str, Any] | None) -> str:
    """A restriction's window: 'content processed from … until …', or 'content of any time'."""
    if window is None:
        return "content of any time"
    return (
        f"content {window['time_basis']} from {time_words(window['from'], exact=True)} "
        f"until {time_words(window['to'], exact=True)}"
    )


def restriction_words(restriction: Mapping[str, Any]) -> str:
    """What follows 'restriction #N' in a decision's basis: who ordered it, and for which
    content ('by CNIL, Order 2024-17; content processed from … until …, or of no given time').

    The console's answers have no content time, and a windowed restriction denies those too
    (fail closed), so the words say so.
    """
    words = f" by {restriction['authority']}, {restriction['instrument']}"
    if restriction.get("window") is not None:
        words += f"; {window_words(restriction['window'])}, or of no given time"
    return words


def basis_words(decision: dict[str, Any]) -> str:
    """'Denied — default for EEA', 'Granted — override by alice, ticket SUP-1, no expiry', …"""
    state = str(decision["state"]).capitalize()
    basis = decision["basis"]
    if basis == "erased":
        why = "erased"
    elif basis == "unknown":
        why = "unknown subject"
    elif basis == "restriction":
        restriction = decision.get("restriction")
        why = f"restriction #{decision.get('restriction_id')}"
        if restriction:
            why += restriction_words(restriction)
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
    return f"{state} — {why}"


def subjects(count: int) -> str:
    """'1 subject', '1,204 subjects'."""
    return f"{count:,} subject{'' if count == 1 else 's'}"


def _listed(values: Iterable[str]) -> str:
    return ", ".join(values)


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
    """Words for the events about purposes, restrictions and keys."""
    match event:
        case ev.PurposeCreated(title=title):
            return f"Purpose created: {title}"
        case ev.PolicyChanged() | ev.PurposeUpdated():
            return "Purpose changed: " + ", ".join(sorted(event.after))
        case ev.NoticePublished(purpose=purpose, version=version):
            return f"Notice {version} of {purpose} published"
        case ev.RestrictionPlaced(restriction_id=rid, purpose=purpose, changed=changed):
            window = event.window
            scope = (
                "content of any time"
                if window is None
                else window_words(
                    {"from": window.start, "to": window.end, "time_basis": window.time_basis}
                )
            )
            return (
                f"Restriction #{rid} placed by {event.authority} ({event.instrument}) on "
                f"{purpose} in {_listed(event.jurisdictions)}, {scope}: "
                f"{subjects(changed)} denied"
            )
        case ev.RestrictionLifted(restriction_id=rid, purpose=purpose, changed=changed):
            return f"Restriction #{rid} lifted on {purpose}: {subjects(changed)} allowed again"
        case ev.KeyCreated(name=name, role=role):
            return f"Key {name} ({role}) created"
        case ev.KeyRevoked(name=name, role=role):
            return f"Key {name} ({role}) revoked"
        case ev.SigningKeyRotated(kid=kid, previous_kid=previous, previous_expires_at=expires):
            words = f"Signing key rotated: {kid} signs from now on"
            if previous:
                words += f"; {previous} stays published for checking until {time_words(expires)}"
            return words
    return None
