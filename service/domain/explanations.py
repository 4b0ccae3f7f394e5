"""Why a decision is what it is, in plain words for the user it is about: a stable code, the
values its sentence names, and the English sentence ("Off — the default in your region (EEA)").

The code and values are what a translation keys on: `REASONS[code]` is the English template of
the reason, and `words(...)` builds the sentence with any translation of "On", "Off" and the
templates (the /me page passes German ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.domain.policy import REGION_GROUPS, WILDCARD
from service.domain.translatable import N_

# The reason after "On — " or "Off — ", by code; `{…}` names a value of the explanation.
REASONS: Mapping[str, str] = {
    "erased": N_("your account was deleted"),
    "restriction": N_("an order by {authority} restricts this"),
    "restriction_unnamed": N_("an order restricts this"),
    "not_offered": N_("this is not used where you live"),
    "override": N_("set by our support team"),
    "gpc": N_("your browser's Global Privacy Control signal asked for this"),
    "choice_on": N_("you turned it on"),
    "choice_off": N_("you turned it off"),
    "default_region": N_("the default in your region ({region})"),
    "default_country": N_("the default in your country ({country})"),
    "default": N_("the default"),
    "no_default": N_("no default applies, so it stays off"),
    "unknown": N_("we hold no record of you yet, so the setting for new accounts applies"),
}
ON, OFF = N_("On"), N_("Off")
GPC_SOURCE = "gpc"


@dataclass(frozen=True, slots=True)
class Explanation:
    """The reason for one decision: its code, the values its sentence names, the English text."""

    code: str
    params: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def document(self) -> dict[str, Any]:
        """As JSON: {"code", "params", "text"}."""
        return {"code": self.code, "params": dict(self.params), "text": self.text}


def words(
    code: str,
    allowed: bool,
    params: Mapping[str, str],
    translate: Callable[[str], str] = lambda text: text,
) -> str:
    """'On — you turned it on': the state and the reason, each passed through `translate`."""
    reason = translate(REASONS[code]).format(**params)
    return f"{translate(ON if allowed else OFF)} — {reason}"


def _reason(decision: Mapping[str, Any], authority: str | None) -> tuple[str, dict[str, str]]:
    """The code and values for a decision, by its basis (and source, selector, override)."""
    basis = decision.get("basis")
    if basis == "erased":
        return "erased", {}
    if basis == "restriction":
        if authority:
            return "restriction", {"authority": authority}
        return "restriction_unnamed", {}
    if basis == "not_offered":
        return "not_offered", {}
    if basis == "override":
        return "override", {}
    if basis == "choice":
        if decision.get("source") == GPC_SOURCE:
            return "gpc", {}
        return ("choice_on" if decision.get("allowed") else "choice_off"), {}
    if basis == "default":
        selector = decision.get("default_selector")
        if selector is None:
            return "no_default", {}
        if selector == WILDCARD:
            return "default", {}
        if selector in REGION_GROUPS:
            return "default_region", {"region": str(selector)}
        return "default_country", {"country": str(selector)}
    return "unknown", {}


def explain(decision: Mapping[str, Any], *, authority: str | None = None) -> Explanation:
    """Why the decision is what it is, for the user: from its basis, and for a restriction the
    authority whose order it is (the caller looks it up by the decision's restriction_id)."""
    code, params = _reason(decision, authority)
    return Explanation(code, params, words(code, bool(decision.get("allowed")), params))
