"""Decisions and their basis in words, for people rather than pipelines."""

from __future__ import annotations

from typing import Any

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
    elif basis == "choice":
        why = f"user's choice ({decision.get('source')})"
    else:
        why = selector_words(decision.get("default_selector"))
    return f"{state} — {why}"
