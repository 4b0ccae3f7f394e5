"""Effective consent: the pure rule turning subject, restrictions, choice, overrides and policy
into state.

Order: erased -> an active restriction that matches (a windowed one only when the content's
time is inside its window, or unknown) -> the purpose not offered in the subject's jurisdiction
-> an active override -> the user's choice -> the default; a never-seen ID -> a `*`
restriction, then not_offered under `*`, then unknown_subject.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import pycountry

State = Literal["granted", "denied"]
Basis = Literal["erased", "restriction", "not_offered", "override", "choice", "default", "unknown"]
LegalBasis = Literal["consent", "legitimate_interest", "not_offered"]
TimeBasis = Literal["processed", "created"]

STATES: tuple[State, ...] = ("granted", "denied")
LEGAL_BASES: tuple[LegalBasis, ...] = ("consent", "legitimate_interest", "not_offered")
TIME_BASES: tuple[TimeBasis, ...] = ("processed", "created")
DEFAULT_LEGAL_BASIS: LegalBasis = "consent"
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
    legal_bases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        defaults: Mapping[str, str],
        unknown_subject: str,
        legal_bases: Mapping[str, str] | None = None,
    ) -> Policy:
        """A policy holding its own copies of stored maps (a row's JSON stays the row's)."""
        return cls(dict(defaults), unknown_subject, dict(legal_bases or {}))


@dataclass(frozen=True, slots=True)
class Window:
    """The time window `[start, end)` of a restriction, about one time of the content."""

    start: datetime
    end: datetime
    time_basis: str = "processed"

    def contains(self, when: datetime) -> bool:
        """Whether a time is inside: start inclusive, end exclusive."""
        return self.start <= when < self.end


@dataclass(frozen=True, slots=True)
class RestrictionFacts:
    """One restriction, with the seqs at which it was placed and lifted."""

    id: int
    purposes: frozenset[str]
    jurisdictions: frozenset[str]
    placed_seq: int
    window: Window | None = None
    lifted_seq: int | None = None

    def active(self, seq: int) -> bool:
        """In force as of seq: placed at or before it, not lifted at or before it."""
        return self.placed_seq <= seq and (self.lifted_seq is None or self.lifted_seq > seq)

    def covers(self, purpose: str, jurisdiction: str | None) -> bool:
        """Whether it is about this purpose and a subject of this jurisdiction.

        A subject without a jurisdiction, and a never-seen ID, are covered only by `*`.
        """
        return purpose in self.purposes and selects(self.jurisdictions, jurisdiction)

    def denies(self, content_time: datetime | None) -> bool:
        """Whether it denies content of this time: always without a window; with one, a time
        inside it, and no time at all (fail closed: nothing shows the content is outside)."""
        return self.window is None or content_time is None or self.window.contains(content_time)


def selects(selectors: Iterable[str], jurisdiction: str | None) -> bool:
    """Whether any of the selectors (country, region group, `*`) covers a jurisdiction."""
    for selector in selectors:
        if selector == WILDCARD:
            return True
        if jurisdiction and (
            selector == jurisdiction or jurisdiction in REGION_GROUPS.get(selector, ())
        ):
            return True
    return False


def restriction_for(
    restrictions: Iterable[RestrictionFacts],
    purpose: str,
    jurisdiction: str | None,
    seq: int,
    content_time: datetime | None,
) -> RestrictionFacts | None:
    """The restriction that denies this answer as of seq (the earliest placed), if any."""
    hits = [
        r
        for r in restrictions
        if r.active(seq) and r.covers(purpose, jurisdiction) and r.denies(content_time)
    ]
    return min(hits, key=lambda r: (r.placed_seq, r.id)) if hits else None


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
    restriction: RestrictionFacts | None = None
    legal_basis: str = DEFAULT_LEGAL_BASIS

    @property
    def allowed(self) -> bool:
        """Only a positive grant allows; everything else denies."""
        return self.state == "granted"


def default_for(policy: Policy, jurisdiction: str | None) -> tuple[str, str | None]:
    """Return the default state for a jurisdiction and the selector that gave it.

    Country code first, then region group, then '*'. With no matching selector the answer is
    denied: an incomplete policy must never allow by accident.
    """
    value, selector = by_selector(policy.defaults, jurisdiction)
    return (_state(value), selector) if value is not None else ("denied", None)


def by_selector(
    values: Mapping[str, str], jurisdiction: str | None
) -> tuple[str | None, str | None]:
    """The value a selector map holds for a jurisdiction, and its selector: country code
    first, then region group, then `*`; (None, None) when none matches."""
    if jurisdiction:
        if jurisdiction in values:
            return values[jurisdiction], jurisdiction
        for group in sorted(REGION_GROUPS):
            if group in values and jurisdiction in REGION_GROUPS[group]:
                return values[group], group
    if WILDCARD in values:
        return values[WILDCARD], WILDCARD
    return None, None


def legal_basis_for(policy: Policy, jurisdiction: str | None) -> str:
    """The purpose's legal basis for a jurisdiction; `consent` where legal_bases say nothing."""
    value, _ = by_selector(policy.legal_bases, jurisdiction)
    return value if value in LEGAL_BASES else DEFAULT_LEGAL_BASIS


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
    *,
    purpose: str = "",
    restrictions: Iterable[RestrictionFacts] = (),
    content_time: datetime | None = None,
) -> Resolution:
    """Resolve effective consent for one user and purpose as of event seq, which happened at `at`.

    erased -> denied; else an active restriction that covers the purpose and the subject's
    jurisdiction and denies the content's time; else not_offered where the purpose's legal
    basis says so; else an active override; else the user's choice; else the purpose default
    for the subject's jurisdiction. A never-seen subject: a `*` restriction, not_offered under
    `*`, else the policy's unknown_subject state. Restrictions are matched by `purpose`.
    """
    jurisdiction = subject.jurisdiction if subject is not None else None
    legal = legal_basis_for(policy, jurisdiction)
    if subject is not None and subject.erased:
        return Resolution("denied", "erased", legal_basis=legal)
    restriction = restriction_for(restrictions, purpose, jurisdiction, seq, content_time)
    if restriction is not None:
        return Resolution("denied", "restriction", restriction=restriction, legal_basis=legal)
    if legal == "not_offered":
        return Resolution("denied", "not_offered", legal_basis=legal)
    if subject is None:
        return Resolution(_state(policy.unknown_subject), "unknown", legal_basis=legal)
    override = active_override(overrides, seq, at)
    if override is not None:
        return Resolution(_state(override.state), "override", override=override, legal_basis=legal)
    if choice is not None:
        return Resolution(_state(choice), "choice", legal_basis=legal)
    state, selector = default_for(policy, subject.jurisdiction)
    return Resolution(state, "default", selector=selector, legal_basis=legal)


def _state(value: str) -> str:
    # Anything but an exact "granted" reads as denied: fail closed on corrupt or unknown values.
    return "granted" if value == "granted" else "denied"
