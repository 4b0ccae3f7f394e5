"""Unit tests for effective-consent resolution in service.domain.policy: pure rules, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain.policy import (
    EEA,
    Basis,
    OverrideFacts,
    Policy,
    Resolution,
    SubjectFacts,
    active_override,
    default_for,
    is_country,
    is_selector,
    override_active,
    resolve,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
SEQ = 10

# A policy that gives a different answer for each way a default can be reached.
POLICY = Policy(defaults={"DE": "granted", "EEA": "denied", "*": "granted"})

EU_27 = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
EEA_NOT_EU = ["IS", "LI", "NO"]


def make_override(
    *,
    id: int = 1,
    state: str = "denied",
    placed_seq: int = 5,
    expires_at: datetime | None = None,
    lifted_seq: int | None = None,
) -> OverrideFacts:
    """An override placed before SEQ, never lifted and never expiring unless told otherwise."""
    return OverrideFacts(
        id=id,
        state=state,
        placed_seq=placed_seq,
        expires_at=expires_at,
        lifted_seq=lifted_seq,
        placed_by="support-alice",
        ticket="SUP-1",
    )


def subject(jurisdiction: str | None = "US", *, erased: bool = False) -> SubjectFacts:
    """A known subject."""
    return SubjectFacts(jurisdiction=jurisdiction, erased=erased)


# --- unknown subjects --------------------------------------------------------------------------


def test_unknown_subject_is_denied_by_default_with_basis_unknown() -> None:
    result = resolve(None, None, [], Policy(defaults={"*": "granted"}), SEQ, AT)

    assert result == Resolution("denied", "unknown")
    assert not result.allowed


@pytest.mark.parametrize("state", ["granted", "denied"])
def test_unknown_subject_gets_the_policys_unknown_subject_state(state: str) -> None:
    policy = Policy(defaults={"*": "denied"}, unknown_subject=state)

    result = resolve(None, None, [], policy, SEQ, AT)

    assert result.state == state
    assert result.basis == "unknown"
    assert result.selector is None
    assert result.override is None


def test_unknown_subject_is_decided_by_the_policy_alone_not_by_stray_choices_or_overrides() -> None:
    policy = Policy(defaults={"*": "granted"}, unknown_subject="denied")

    result = resolve(None, "granted", [make_override(state="granted")], policy, SEQ, AT)

    assert result == Resolution("denied", "unknown")


@pytest.mark.parametrize("corrupt", ["GRANTED", "yes", "allow", "", " granted"])
def test_corrupt_unknown_subject_state_reads_as_denied(corrupt: str) -> None:
    policy = Policy(defaults={"*": "granted"}, unknown_subject=corrupt)

    assert resolve(None, None, [], policy, SEQ, AT) == Resolution("denied", "unknown")


# --- erased subjects ---------------------------------------------------------------------------


def test_erased_subject_is_denied_even_with_an_active_granting_override_and_a_granted_choice() -> (
    None
):
    override = make_override(state="granted")

    result = resolve(subject("DE", erased=True), "granted", [override], POLICY, SEQ, AT)

    assert result == Resolution("denied", "erased")
    assert not result.allowed


def test_erased_subject_is_denied_even_where_the_default_grants() -> None:
    result = resolve(subject("US", erased=True), None, [], POLICY, SEQ, AT)

    assert result == Resolution("denied", "erased")


# --- overrides ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override_state", "choice"), [("denied", "granted"), ("granted", "denied")]
)
def test_active_override_beats_user_choice(override_state: str, choice: str) -> None:
    override = make_override(state=override_state)

    result = resolve(subject(), choice, [override], POLICY, SEQ, AT)

    assert result.state == override_state
    assert result.basis == "override"
    assert result.override is override
    assert result.selector is None


def test_active_override_beats_the_default_when_there_is_no_choice() -> None:
    override = make_override(state="denied")

    result = resolve(subject("US"), None, [override], POLICY, SEQ, AT)

    assert (result.state, result.basis) == ("denied", "override")


def test_override_beats_user_choice_until_lifted() -> None:
    override = make_override(state="denied", placed_seq=5, lifted_seq=10)

    before_lift = resolve(subject(), "granted", [override], POLICY, 9, AT)
    at_lift = resolve(subject(), "granted", [override], POLICY, 10, AT)
    after_lift = resolve(subject(), "granted", [override], POLICY, 11, AT)

    assert (before_lift.state, before_lift.basis) == ("denied", "override")
    assert at_lift == Resolution("granted", "choice")
    assert after_lift == Resolution("granted", "choice")


def test_override_placed_after_seq_does_not_apply_yet() -> None:
    override = make_override(state="denied", placed_seq=SEQ + 1)

    result = resolve(subject(), "granted", [override], POLICY, SEQ, AT)

    assert result == Resolution("granted", "choice")


def test_override_placed_at_seq_applies_from_that_seq() -> None:
    override = make_override(state="denied", placed_seq=SEQ)

    result = resolve(subject(), "granted", [override], POLICY, SEQ, AT)

    assert (result.state, result.basis) == ("denied", "override")


def test_override_expired_at_the_time_of_seq_falls_back_to_the_choice() -> None:
    override = make_override(state="denied", expires_at=AT - timedelta(seconds=1))

    result = resolve(subject(), "granted", [override], POLICY, SEQ, AT)

    assert result == Resolution("granted", "choice")


def test_override_expiring_exactly_at_the_time_of_seq_is_no_longer_in_force() -> None:
    override = make_override(state="denied", expires_at=AT)

    result = resolve(subject(), "granted", [override], POLICY, SEQ, AT)

    assert result == Resolution("granted", "choice")


def test_override_expiring_after_the_time_of_seq_is_still_in_force() -> None:
    override = make_override(state="denied", expires_at=AT + timedelta(microseconds=1))

    result = resolve(subject(), "granted", [override], POLICY, SEQ, AT)

    assert (result.state, result.basis) == ("denied", "override")


def test_override_expiry_is_judged_at_the_time_passed_in_not_the_wall_clock() -> None:
    # Both dates are far from today, on opposite sides: only `at` can explain both answers.
    long_expired = make_override(state="denied", expires_at=datetime(2000, 1, 2, tzinfo=UTC))
    far_future = make_override(state="denied", expires_at=datetime(2999, 1, 1, tzinfo=UTC))

    past = resolve(
        subject(), "granted", [long_expired], POLICY, SEQ, datetime(2000, 1, 1, tzinfo=UTC)
    )
    future = resolve(
        subject(), "granted", [far_future], POLICY, SEQ, datetime(2999, 1, 2, tzinfo=UTC)
    )

    assert (past.state, past.basis) == ("denied", "override")
    assert future == Resolution("granted", "choice")


def test_most_recently_placed_of_several_active_overrides_wins() -> None:
    older = make_override(id=1, state="granted", placed_seq=3)
    newest = make_override(id=3, state="denied", placed_seq=8)
    middle = make_override(id=2, state="granted", placed_seq=5)

    result = resolve(subject(), "granted", [older, newest, middle], POLICY, SEQ, AT)

    assert result.override is newest
    assert (result.state, result.basis) == ("denied", "override")


def test_earlier_override_takes_over_when_the_newer_one_is_lifted() -> None:
    older = make_override(id=1, state="granted", placed_seq=3)
    newer = make_override(id=2, state="denied", placed_seq=5, lifted_seq=7)

    result = resolve(subject(), "denied", [newer, older], POLICY, SEQ, AT)

    assert result.override is older
    assert (result.state, result.basis) == ("granted", "override")


def test_earlier_override_takes_over_when_the_newer_one_has_expired() -> None:
    older = make_override(id=1, state="granted", placed_seq=3)
    newer = make_override(id=2, state="denied", placed_seq=5, expires_at=AT)

    result = resolve(subject(), "denied", [older, newer], POLICY, SEQ, AT)

    assert result.override is older


def test_overrides_can_be_any_iterable() -> None:
    overrides = (o for o in [make_override(state="denied")])

    result = resolve(subject(), "granted", overrides, POLICY, SEQ, AT)

    assert result.basis == "override"


@pytest.mark.parametrize("corrupt", ["GRANTED", "yes", "true", ""])
def test_corrupt_override_state_reads_as_denied(corrupt: str) -> None:
    override = make_override(state=corrupt)

    result = resolve(subject(), "granted", [override], POLICY, SEQ, AT)

    assert (result.state, result.basis) == ("denied", "override")
    assert not result.allowed


# --- choices -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jurisdiction", "choice"), [("US", "denied"), ("DE", "denied"), ("FR", "granted")]
)
def test_user_choice_beats_the_default(jurisdiction: str, choice: str) -> None:
    # US and DE default to granted, FR (via EEA) to denied: the choice is the opposite each time.
    result = resolve(subject(jurisdiction), choice, [], POLICY, SEQ, AT)

    assert result == Resolution(choice, "choice")


def test_inactive_overrides_leave_the_choice_in_force() -> None:
    overrides = [
        make_override(id=1, placed_seq=SEQ + 1),
        make_override(id=2, lifted_seq=SEQ),
        make_override(id=3, expires_at=AT),
    ]

    result = resolve(subject(), "granted", overrides, POLICY, SEQ, AT)

    assert result == Resolution("granted", "choice")


@pytest.mark.parametrize("corrupt", ["GRANTED", "Granted", "yes", "1", "", "granted "])
def test_corrupt_choice_reads_as_denied(corrupt: str) -> None:
    result = resolve(subject("US"), corrupt, [], POLICY, SEQ, AT)

    assert result == Resolution("denied", "choice")
    assert not result.allowed


# --- defaults ----------------------------------------------------------------------------------


def test_default_by_exact_country_code() -> None:
    policy = Policy(defaults={"US": "granted", "*": "denied"})

    result = resolve(subject("US"), None, [], policy, SEQ, AT)

    assert result == Resolution("granted", "default", selector="US")


@pytest.mark.parametrize("country", ["DE", "FR", "IE", "IS", "LI", "NO"])
def test_default_by_eea_region_group(country: str) -> None:
    policy = Policy(defaults={"EEA": "denied", "*": "granted"})

    result = resolve(subject(country), None, [], policy, SEQ, AT)

    assert result == Resolution("denied", "default", selector="EEA")


@pytest.mark.parametrize("country", ["US", "GB", "CH", "TR", "JP"])
def test_countries_outside_the_eea_fall_through_to_the_wildcard(country: str) -> None:
    policy = Policy(defaults={"EEA": "denied", "*": "granted"})

    result = resolve(subject(country), None, [], policy, SEQ, AT)

    assert result == Resolution("granted", "default", selector="*")


@pytest.mark.parametrize("country", ["DE", "NO"])
def test_country_selector_beats_the_eea_group(country: str) -> None:
    policy = Policy(defaults={country: "granted", "EEA": "denied", "*": "denied"})

    result = resolve(subject(country), None, [], policy, SEQ, AT)

    assert result == Resolution("granted", "default", selector=country)


def test_country_selector_for_another_country_does_not_apply() -> None:
    policy = Policy(defaults={"DE": "granted", "EEA": "denied"})

    result = resolve(subject("FR"), None, [], policy, SEQ, AT)

    assert result == Resolution("denied", "default", selector="EEA")


def test_subject_without_jurisdiction_uses_the_wildcard() -> None:
    result = resolve(subject(None), None, [], POLICY, SEQ, AT)

    assert result == Resolution("granted", "default", selector="*")


@pytest.mark.parametrize("jurisdiction", [None, "US", "DE", "IS"])
def test_policy_without_a_matching_selector_nor_wildcard_denies_with_no_selector(
    jurisdiction: str | None,
) -> None:
    policy = Policy(defaults={"FR": "granted", "JP": "granted"})

    result = resolve(subject(jurisdiction), None, [], policy, SEQ, AT)

    assert result == Resolution("denied", "default", selector=None)
    assert not result.allowed


def test_empty_policy_denies() -> None:
    result = resolve(subject("US"), None, [], Policy(defaults={}), SEQ, AT)

    assert result == Resolution("denied", "default", selector=None)


@pytest.mark.parametrize("corrupt", ["GRANTED", "yes", "allowed", ""])
def test_corrupt_default_state_reads_as_denied(corrupt: str) -> None:
    policy = Policy(defaults={"*": corrupt})

    result = resolve(subject("US"), None, [], policy, SEQ, AT)

    assert result == Resolution("denied", "default", selector="*")


# --- Resolution.allowed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        ("granted", True),
        ("denied", False),
        ("GRANTED", False),
        ("yes", False),
        ("", False),
    ],
)
def test_resolution_is_allowed_only_for_an_exact_grant(state: str, allowed: bool) -> None:
    bases: tuple[Basis, ...] = ("erased", "override", "choice", "default", "unknown")
    for basis in bases:
        assert Resolution(state, basis).allowed is allowed


# --- default_for -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jurisdiction", "expected"),
    [
        ("DE", ("granted", "DE")),
        ("FR", ("denied", "EEA")),
        ("NO", ("denied", "EEA")),
        ("US", ("granted", "*")),
        (None, ("granted", "*")),
        ("", ("granted", "*")),
    ],
)
def test_default_for_tries_country_then_region_group_then_wildcard(
    jurisdiction: str | None, expected: tuple[str, str | None]
) -> None:
    assert default_for(POLICY, jurisdiction) == expected


def test_default_for_without_any_matching_selector_is_denied() -> None:
    assert default_for(Policy(defaults={"EEA": "granted"}), "US") == ("denied", None)
    assert default_for(Policy(defaults={"EEA": "granted"}), None) == ("denied", None)


def test_default_for_reads_a_corrupt_state_as_denied() -> None:
    assert default_for(Policy(defaults={"DE": "yes"}), "DE") == ("denied", "DE")


# --- override_active / active_override ---------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "active"),
    [
        (make_override(placed_seq=SEQ - 1), True),
        (make_override(placed_seq=SEQ), True),
        (make_override(placed_seq=SEQ + 1), False),
        (make_override(lifted_seq=SEQ - 1), False),
        (make_override(lifted_seq=SEQ), False),
        (make_override(lifted_seq=SEQ + 1), True),
        (make_override(expires_at=AT - timedelta(days=1)), False),
        (make_override(expires_at=AT), False),
        (make_override(expires_at=AT + timedelta(days=1)), True),
        (make_override(lifted_seq=SEQ + 1, expires_at=AT), False),
        (make_override(lifted_seq=SEQ, expires_at=AT + timedelta(days=1)), False),
    ],
    ids=[
        "placed-before",
        "placed-at",
        "placed-after",
        "lifted-before",
        "lifted-at",
        "lifted-after",
        "expired",
        "expires-at",
        "expires-later",
        "lifted-later-but-expired",
        "lifted-but-not-expired",
    ],
)
def test_override_active_as_of_seq_and_time(override: OverrideFacts, active: bool) -> None:
    assert override_active(override, SEQ, AT) is active


def test_active_override_is_none_without_overrides() -> None:
    assert active_override([], SEQ, AT) is None


def test_active_override_is_none_when_none_is_in_force() -> None:
    overrides = [make_override(id=1, lifted_seq=SEQ), make_override(id=2, expires_at=AT)]

    assert active_override(overrides, SEQ, AT) is None


def test_active_override_picks_the_most_recently_placed_one_in_force() -> None:
    first = make_override(id=1, placed_seq=2)
    second = make_override(id=2, placed_seq=4)
    too_late = make_override(id=3, placed_seq=SEQ + 1)

    assert active_override([second, too_late, first], SEQ, AT) is second


# --- selectors and countries -------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["*", "EEA", "DE", "US", "IS", "GB"])
def test_is_selector_accepts_wildcard_region_group_and_countries(selector: str) -> None:
    assert is_selector(selector)


@pytest.mark.parametrize("selector", ["", "**", "eea", "de", "EU", "XX", "DEU", "EEA ", "all"])
def test_is_selector_rejects_anything_else(selector: str) -> None:
    assert not is_selector(selector)


@pytest.mark.parametrize("code", ["DE", "US", "GB", "IS", "LI", "NO", "CH"])
def test_is_country_accepts_upper_case_alpha_2_codes(code: str) -> None:
    assert is_country(code)


@pytest.mark.parametrize("code", ["", "de", "De", "EU", "XX", "DEU", "EEA", "*", "D", " DE"])
def test_is_country_rejects_anything_else(code: str) -> None:
    assert not is_country(code)


def test_eea_group_is_the_eu_27_plus_iceland_liechtenstein_and_norway() -> None:
    assert set(EU_27 + EEA_NOT_EU) == EEA
    assert len(EEA) == 30
    assert all(is_country(code) for code in EEA)
    assert not {"GB", "CH"} & EEA
