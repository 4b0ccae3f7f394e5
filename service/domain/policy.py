"""Effective consent: the pure rule turning subject, choice, overrides and policy into state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pycountry

State = Literal["granted", "denied"]
Basis = Literal["erased", "override", "choice", "default", "unknown"]

STATES: tuple[State, ...] = ("granted", "denied")
WILDCARD = "*"

# EU 27 plus Iceland, Liechtenstein and Norway.
EEA: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
    + ["IS", "LI", "NO"]
)
REGION_GROUPS: Mapping[str, frozenset[str]] = {"EEA": EEA}

COUNTRY_CODES: frozenset[str] = frozenset(c.alpha_2 for c in pycountry.countries)


def is_country(code: str) -> bool:
    """Tell whether code is an ISO 3166-1 alpha-2 country code (upper case)."""
    return code in COUNTRY_CODES


def is_selector(selector: str) -> bool:
    """Tell whether selector may key a default policy: a country, a region group, or '*'."""
    return selector == WILDCARD or selector in REGION_GROUPS or is_country(selector)


@dataclass(frozen=True, slots=True)
class Policy:
    """A purpose's default policy as of some seq."""

    defaults: Mapping[str, str]
    unknown_subject: str = "denied"

    @classmethod
    def of(cls, defaults: Mapping[str, str], unknown_subject: str) -> Policy:
        """A policy holding its own copy of stored defaults (a row's JSON stays the row's)."""
        return cls(dict(defaults), unknown_subject)


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What resolution needs to know about a known subject."""

    jurisdiction: str | None
    erased: bool


@dataclass(frozen=True, slots=True)
class OverrideFacts:
    """One override, with the seqs at which it was placed and lifted."""

    id: int
    state: str
    placed_seq: int
    expires_at: datetime | None = None
    lifted_seq: int | None = None
    placed_by: str = ""
    ticket: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """An effective state and why: the basis, and the override or default selector used."""

    state: str
    basis: Basis
    override: OverrideFacts | None = None
    selector: str | None = None

    @property
    def allowed(self) -> bool:
        """Only a positive grant allows; everything else denies."""
        return self.state == "granted"


def default_for(policy: Policy, jurisdiction: str | None) -> tuple[str, str | None]:
    """Return the default state for a jurisdiction and the selector that gave it.

    Country code first, then region group, then '*'. With no matching selector the answer is
    denied: an incomplete policy must never allow by accident.
    """
    defaults = policy.defaults
    if jurisdiction:
        if jurisdiction in defaults:
            return _state(defaults[jurisdiction]), jurisdiction
        for group in sorted(REGION_GROUPS):
            if group in defaults and jurisdiction in REGION_GROUPS[group]:
                return _state(defaults[group]), group
    if WILDCARD in defaults:
        return _state(defaults[WILDCARD]), WILDCARD
    return "denied", None


def override_active(override: OverrideFacts, seq: int, at: datetime) -> bool:
    """Tell whether an override is in force as of event seq, which happened at `at`."""
    if override.placed_seq > seq:
        return False
    if override.lifted_seq is not None and override.lifted_seq <= seq:
        return False
    return override.expires_at is None or override.expires_at > at


def active_override(
    overrides: Iterable[OverrideFacts], seq: int, at: datetime
) -> OverrideFacts | None:
    """Return the override in force as of seq (the most recently placed one), if any."""
    live = [o for o in overrides if override_active(o, seq, at)]
    return max(live, key=lambda o: o.placed_seq) if live else None


def resolve(
    subject: SubjectFacts | None,
    choice: str | None,
    overrides: Iterable[OverrideFacts],
    policy: Policy,
    seq: int,
    at: datetime,
) -> Resolution:
    """Resolve effective consent for one user and purpose as of event seq, which happened at `at`.

    erased -> denied; else an active override; else the user's choice; else the purpose default
    for the subject's jurisdiction; a never-seen subject -> the policy's unknown_subject state.
    """
    if subject is None:
        return Resolution(_state(policy.unknown_subject), "unknown")
    if subject.erased:
        return Resolution("denied", "erased")
    override = active_override(overrides, seq, at)
    if override is not None:
        return Resolution(_state(override.state), "override", override=override)
    if choice is not None:
        return Resolution(_state(choice), "choice")
    state, selector = default_for(policy, subject.jurisdiction)
    return Resolution(state, "default", selector=selector)


def _state(value: str) -> str:
    # Anything but an exact "granted" reads as denied: fail closed on corrupt or unknown values.
    return "granted" if value == "granted" else "denied"
