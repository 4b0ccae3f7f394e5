"""Unit tests for If-Match parsing and the ETags of consent records (service.ledger.choices)."""

from __future__ import annotations

import pytest

from service.domain.errors import BadRequest
from service.ledger.choices import IF_MATCH_RE, etag, parse_if_match


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"3"', {3}),
        ('W/"3"', {3}),
        ('"0"', {0}),
        ('"1", "2"', {1, 2}),
        ('"1","2"', {1, 2}),
        ('W/"1", "2"', {1, 2}),
        ('"4", "4"', {4}),
        ('  "7"  ', {7}),
        ('"123456789012345678"', {123456789012345678}),
    ],
)
def test_if_match_gives_the_versions_it_accepts(header: str, expected: set[int]) -> None:
    assert parse_if_match(header) == expected


@pytest.mark.parametrize("header", ["*", " * "])
def test_if_match_star_accepts_any_version(header: str) -> None:
    assert parse_if_match(header) is None


@pytest.mark.parametrize(
    "header",
    [
        "abc",
        '"-1"',
        "",
        " ",
        '"a"',
        '"1.5"',
        '"1",',
        ",",
        '"1" "2"',
        '"1";"2"',
        "W/",
        'w/"3"',
        "**",
        '*, "1"',
        '"1234567890123456789"',
        "3",
        '"3',
        '3"',
        "W/3",
    ],
)
def test_malformed_if_match_is_a_bad_request(header: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_if_match(header)

    assert caught.value.status == 400
    assert caught.value.errors is not None
    assert set(caught.value.errors) == {"If-Match"}


def test_etag_is_the_version_quoted() -> None:
    assert etag(5) == '"5"'


@pytest.mark.parametrize("version", [0, 1, 42, 10**17])
def test_etag_round_trips_through_if_match(version: int) -> None:
    assert parse_if_match(etag(version)) == {version}


def test_a_long_list_of_etags_is_read_whole() -> None:
    header = ", ".join(f'W/"{v}"' for v in range(40))
    assert len(header) > 200
    assert parse_if_match(header) == set(range(40))


@pytest.mark.parametrize("header", ['"1"', '  W/"2" ,"3"  ', "*", '"1";', "", '"1",,"2"', "\t*"])
def test_the_documented_if_match_pattern_admits_exactly_what_is_parsed(header: str) -> None:
    # openapi.yaml documents IF_MATCH_RE for the value as HTTP delivers it (blanks dropped).
    documented = IF_MATCH_RE.fullmatch(header.strip(" \t")) is not None
    try:
        parse_if_match(header.strip(" \t"))
    except BadRequest:
        parsed = False
    else:
        parsed = True
    assert documented == parsed
