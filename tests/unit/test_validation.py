"""Unit tests for service.domain.validation: user IDs, jurisdictions and default policies."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain import validation
from service.domain.errors import ValidationFailed
from service.domain.policy import COUNTRY_CODES

# --- user_id -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "7",
        "1234567890",
        "Alice",
        "user.name_1",
        "tenant:42",
        "alice@example.com",
        "a-b",
        "._:@-",
        "A" * 64,
        "x" * 63 + "9",
    ],
)
def test_well_formed_user_id_is_returned_unchanged(value: str) -> None:
    assert validation.user_id(value) == value
    assert validation.is_user_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 65,
        "has space",
        " leading",
        "trailing ",
        "a/b",
        "../etc",
        "a\\b",
        "a+b",
        "a#b",
        "a%20b",
        "a,b",
        "a\nb",
        "abc\n",
        "a\tb",
        "a\x00b",
        "müller",
        "ユーザー",
        "١٢٣",  # Arabic-Indic digits: digits, but not 0-9
        "ａｂｃ",  # full-width letters
    ],
)
def test_malformed_user_id_fails_validation_naming_the_field(value: str) -> None:
    assert not validation.is_user_id(value)
    with pytest.raises(ValidationFailed) as caught:
        validation.user_id(value)

    assert caught.value.status == 422
    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"user_id"}


def test_user_id_of_exactly_64_characters_passes_and_65_fails() -> None:
    assert validation.user_id("u" * 64) == "u" * 64
    with pytest.raises(ValidationFailed):
        validation.user_id("u" * 65)


def test_user_id_error_is_keyed_by_the_field_name_given() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.user_id("not valid", field="user_ids[3]")

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"user_ids[3]"}


def test_user_id_error_detail_is_bounded_for_huge_input() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.user_id("/" * 10_000)

    assert len(caught.value.detail) < 300


# --- jurisdiction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        ("De", "DE"),
        ("us", "US"),
        ("is", "IS"),
        (" fr ", "FR"),
    ],
)
def test_jurisdiction_is_normalised_to_an_upper_case_country_code(
    value: str, expected: str
) -> None:
    assert validation.jurisdiction(value) == expected


def test_no_jurisdiction_passes_as_none() -> None:
    assert validation.jurisdiction(None) is None


@pytest.mark.parametrize(
    "value", ["XX", "xx", "EU", "eu", "EEA", "*", "DEU", "deu", "D", "", "  ", "D E", "276"]
)
def test_jurisdiction_that_is_not_an_alpha_2_country_code_fails(value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.jurisdiction(value)

    assert caught.value.status == 422
    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"jurisdiction"}


@pytest.mark.parametrize("value", ["\u0131t", "\u017fe", "\xdf", "\u212aE", "DE\u00a0", "\x0bDE"])
def test_jurisdiction_is_ascii_letters_only_whatever_upper_casing_makes_of_others(
    value: str,
) -> None:
    # 'ıt'.upper() is 'IT' and 'ß'.upper() 'SS': the code must be what openapi.yaml says.
    with pytest.raises(ValidationFailed):
        validation.jurisdiction(value)


def test_the_jurisdiction_pattern_admits_every_country_in_every_case_and_nothing_else() -> None:
    for code in COUNTRY_CODES:
        for spelt in (code, code.lower(), code.title(), code[0].lower() + code[1]):
            assert validation.JURISDICTION_RE.fullmatch(spelt), spelt
    assert validation.JURISDICTION_RE.fullmatch("EEA") is None
    assert validation.JURISDICTION_RE.fullmatch("XX") is None


def test_jurisdiction_error_is_keyed_by_the_field_name_given() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.jurisdiction("XX", field="subject.jurisdiction")

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"subject.jurisdiction"}


# --- defaults ----------------------------------------------------------------------------------


def test_defaults_accept_countries_the_eea_group_and_the_wildcard() -> None:
    policy = {"DE": "granted", "EEA": "denied", "*": "granted"}

    assert validation.defaults(policy) == policy


def test_defaults_normalise_lower_case_country_selectors() -> None:
    assert validation.defaults({"de": "granted", "us": "denied"}) == {
        "DE": "granted",
        "US": "denied",
    }


def test_defaults_return_a_new_mapping_leaving_the_input_alone() -> None:
    given = {"de": "granted"}

    clean = validation.defaults(given)

    assert clean is not given
    assert given == {"de": "granted"}


@pytest.mark.parametrize("selector", ["XX", "EU", "DEU", "eu", "", "**", "all", "E E A"])
def test_defaults_with_a_bad_selector_give_a_field_error_for_it(selector: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.defaults({selector: "granted", "*": "denied"})

    assert caught.value.status == 422
    assert caught.value.errors is not None
    assert set(caught.value.errors) == {f"defaults.{selector}"}


@pytest.mark.parametrize("state", ["GRANTED", "Denied", "yes", "allow", "", None, True, 1, []])
def test_defaults_with_a_bad_state_give_a_field_error_for_its_selector(state: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.defaults({"DE": state, "*": "denied"})

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"defaults.DE"}


def test_defaults_report_every_bad_entry_at_once() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.defaults({"XX": "granted", "EEA": "maybe", "*": "granted", "FR": "nope"})

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"defaults.XX", "defaults.EEA", "defaults.FR"}


def test_defaults_refuse_the_same_country_given_twice_in_different_case() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.defaults({"DE": "granted", "de": "denied"})

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"defaults.de"}


@pytest.mark.parametrize("selector", ["\xdf", "\u0131t", "\ufb06"])
def test_defaults_refuse_a_selector_that_only_upper_casing_makes_a_country(selector: str) -> None:
    # 'ß'.upper() is 'SS' (South Sudan) and 'ﬆ'.upper() 'ST': not what the contract admits.
    with pytest.raises(ValidationFailed) as caught:
        validation.defaults({selector: "granted"})

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {f"defaults.{selector}"}


def test_defaults_accept_the_region_group_in_any_case() -> None:
    assert validation.defaults({"eea": "denied", "*": "granted"}) == {
        "EEA": "denied",
        "*": "granted",
    }


def test_every_selector_is_listed_once_in_its_stored_case() -> None:
    assert len(set(validation.SELECTORS)) == len(validation.SELECTORS) == len(COUNTRY_CODES) + 2
    for selector in validation.SELECTORS:
        assert validation.SELECTOR_RE.fullmatch(selector), selector
        assert validation.defaults({selector: "granted"}) == {selector: "granted"}


def test_defaults_errors_are_keyed_by_the_field_name_given() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validation.defaults({"XX": "granted"}, field="policy")

    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"policy.XX"}
