"""The pure resolution rule's restriction branches: windows and content times, the edges of a
window, restriction against override, choice, default and erasure, never-seen IDs and `*`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain.policy import (
    OverrideFacts,
    Policy,
    RestrictionFacts,
    SubjectFacts,
    Window,
    resolve,
    restriction_for,
    selects,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
SEQ = 10
PURPOSE = "model_training"
GRANTING = Policy(defaults={"*": "granted"}, unknown_subject="granted")
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 7, 1, tzinfo=UTC)
WINDOW = Window(START, END, "processed")


def order(
    *,
    id: int = 1,
    jurisdictions: tuple[str, ...] = ("EEA",),
    window: Window | None = None,
    placed_seq: int = 5,
    lifted_seq: int | None = None,
    purpose: str = PURPOSE,
) -> RestrictionFacts:
    """A restriction on one purpose, placed before SEQ and never lifted unless told."""
    return RestrictionFacts(
        id=id,
        purposes=frozenset({purpose}),
        jurisdictions=frozenset(jurisdictions),
        placed_seq=placed_seq,
        window=window,
        lifted_seq=lifted_seq,
    )


def decide(
    subject: SubjectFacts | None,
    restrictions: list[RestrictionFacts],
    *,
    choice: str | None = "granted",
    overrides: tuple[OverrideFacts, ...] = (),
    content_time: datetime | None = None,
    seq: int = SEQ,
    purpose: str = PURPOSE,
) -> tuple[str, str, int | None]:
    res = resolve(
        subject,
        choice if subject is not None else None,
        overrides,
        GRANTING,
        seq,
        AT,
        purpose=purpose,
        restrictions=restrictions,
        content_time=content_time,
    )
    return res.state, res.basis, None if res.restriction is None else res.restriction.id


GERMAN = SubjectFacts("DE", False)
AMERICAN = SubjectFacts("US", False)


def test_a_restriction_without_a_window_denies_its_jurisdictions_whatever_the_time() -> None:
    for when in (None, START, datetime(1999, 1, 1, tzinfo=UTC)):
        assert decide(GERMAN, [order()], content_time=when) == ("denied", "restriction", 1)


def test_a_restriction_leaves_other_jurisdictions_and_purposes_alone() -> None:
    assert decide(AMERICAN, [order()]) == ("granted", "choice", None)
    assert decide(GERMAN, [order(purpose="ads")]) == ("granted", "choice", None)


@pytest.mark.parametrize(
    ("when", "denied"),
    [
        (None, True),  # no time given: fail closed
        (START - timedelta(microseconds=1), False),
        (START, True),  # from is inside
        (START + timedelta(days=30), True),
        (END - timedelta(microseconds=1), True),
        (END, False),  # to is outside
        (END + timedelta(days=1), False),
    ],
    ids=["no-time", "just-before", "at-from", "inside", "just-before-to", "at-to", "after"],
)
def test_a_windowed_restriction_denies_times_in_from_to_and_answers_without_a_time(
    when: datetime | None, denied: bool
) -> None:
    expected = ("denied", "restriction", 1) if denied else ("granted", "choice", None)
    assert decide(GERMAN, [order(window=WINDOW)], content_time=when) == expected


def test_a_restriction_beats_an_active_override_granting() -> None:
    override = OverrideFacts(id=7, state="granted", placed_seq=8, expires_at=None)
    assert decide(GERMAN, [order()], overrides=(override,)) == ("denied", "restriction", 1)
    outside = decide(GERMAN, [order(window=WINDOW)], overrides=(override,), content_time=END)
    assert outside == ("granted", "override", None)


def test_erasure_beats_a_restriction() -> None:
    assert decide(SubjectFacts("DE", True), [order()]) == ("denied", "erased", None)


def test_a_restriction_is_in_force_from_its_placing_seq_until_its_lifting_seq() -> None:
    lifted = order(placed_seq=5, lifted_seq=8)
    assert decide(GERMAN, [lifted], seq=4) == ("granted", "choice", None)
    assert decide(GERMAN, [lifted], seq=5) == ("denied", "restriction", 1)
    assert decide(GERMAN, [lifted], seq=7) == ("denied", "restriction", 1)
    assert decide(GERMAN, [lifted], seq=8) == ("granted", "choice", None)


def test_never_seen_ids_and_subjects_without_a_jurisdiction_are_matched_only_by_the_wildcard() -> (
    None
):
    for subject in (None, SubjectFacts(None, False)):
        assert decide(subject, [order(jurisdictions=("EEA", "US"))])[0] == "granted"
        assert decide(subject, [order(jurisdictions=("*",))]) == ("denied", "restriction", 1)


def test_a_wildcard_windowed_restriction_denies_never_seen_ids_only_inside_its_window() -> None:
    wide = order(jurisdictions=("*",), window=WINDOW)
    assert decide(None, [wide]) == ("denied", "restriction", 1)
    assert decide(None, [wide], content_time=END) == ("granted", "unknown", None)


def test_of_several_restrictions_the_earliest_placed_is_named() -> None:
    later = order(id=2, placed_seq=7, jurisdictions=("DE",))
    earlier = order(id=3, placed_seq=6, jurisdictions=("EEA",), window=WINDOW)
    assert decide(GERMAN, [later, earlier]) == ("denied", "restriction", 3)
    # Outside the window only the whole-time one still denies.
    assert decide(GERMAN, [later, earlier], content_time=END) == ("denied", "restriction", 2)


def test_restriction_for_picks_none_when_no_active_one_covers() -> None:
    assert restriction_for([order(lifted_seq=6)], PURPOSE, "DE", SEQ, None) is None
    assert restriction_for([order()], PURPOSE, "US", SEQ, None) is None


@pytest.mark.parametrize(
    ("selectors", "jurisdiction", "covered"),
    [
        (("DE",), "DE", True),
        (("EEA",), "NO", True),
        (("EEA",), "US", False),
        (("*",), None, True),
        (("EEA", "US"), None, False),
        (("BR",), "BR", True),
    ],
)
def test_selectors_cover_countries_region_groups_and_the_wildcard(
    selectors: tuple[str, ...], jurisdiction: str | None, covered: bool
) -> None:
    assert selects(selectors, jurisdiction) is covered
