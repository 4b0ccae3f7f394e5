"""Restrictions in the read index: an overlay at answer time, at the head and as of earlier
seqs, with and without content times, placed and lifted without recomputing any row."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from service.domain import events as ev
from service.domain.clock import to_micros
from service.readindex import codes as cd
from service.readindex.index import NO_TIME, ConsentIndex
from tests.unit.test_index import POLICY, Ledger

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 7, 1, tzinfo=UTC)
INSIDE = to_micros(START + timedelta(days=10))
OUTSIDE = to_micros(END)


@pytest.fixture
def ledger() -> Ledger:
    """Purpose p (EEA denied, elsewhere granted) and subjects: de (granted by choice), us
    (default), none (no jurisdiction), gone (DE, erased)."""
    led = Ledger(ConsentIndex())
    led(ev.PurposeCreated(purpose="p", title="P", defaults=POLICY, unknown_subject="granted"))
    led.register("de", "DE")
    led.choose("de", "granted")
    led.register("us", "US")
    led.register("none", None)
    led.register("gone", "DE")
    led(ev.SubjectErased(user_id="gone", purpose="p"))
    return led


def place(
    led: Ledger,
    restriction_id: int,
    jurisdictions: tuple[str, ...],
    *,
    window: bool = False,
    purpose: str = "p",
) -> int:
    return led(
        ev.RestrictionPlaced(
            purpose=purpose,
            restriction_id=restriction_id,
            authority="DPC",
            instrument="order",
            purposes=(purpose,),
            jurisdictions=jurisdictions,
            window_from=START if window else None,
            window_to=END if window else None,
            time_basis="processed" if window else None,
        )
    )


def lift(led: Ledger, restriction_id: int, purpose: str = "p") -> int:
    return led(ev.RestrictionLifted(purpose=purpose, restriction_id=restriction_id))


IDS = ["de", "us", "none", "gone", "never", "bad id"]


def answers(index: ConsentIndex, seq: int, times: list[int] | None = None) -> list[tuple[str, str]]:
    array = None if times is None else np.array(times, dtype=np.int64)
    codes, stale = index.codes("p", seq, pa.array(IDS, pa.string()), times=array)
    assert stale == []
    return [(cd.Code(int(c)).state, cd.Code(int(c)).basis) for c in codes]


BEFORE = [
    ("granted", "choice"),
    ("granted", "default"),
    ("granted", "default"),
    ("denied", "erased"),
    ("granted", "unknown"),
    ("denied", "invalid"),
]


def test_a_whole_jurisdiction_restriction_denies_its_subjects_but_not_the_erased(
    ledger: Ledger,
) -> None:
    place(ledger, 1, ("DE", "US"))
    assert answers(ledger.index, ledger.seq) == [
        ("denied", "restriction"),
        ("denied", "restriction"),
        ("granted", "default"),
        ("denied", "erased"),
        ("granted", "unknown"),
        ("denied", "invalid"),
    ]


def test_the_wildcard_also_denies_never_seen_ids_and_subjects_without_a_jurisdiction(
    ledger: Ledger,
) -> None:
    place(ledger, 1, ("*",))
    assert [a[1] for a in answers(ledger.index, ledger.seq)] == [
        "restriction",
        "restriction",
        "restriction",
        "erased",
        "restriction",
        "invalid",
    ]


def test_a_windowed_restriction_denies_times_inside_and_missing_times_only(
    ledger: Ledger,
) -> None:
    place(ledger, 1, ("*",), window=True)
    inside = answers(ledger.index, ledger.seq, [INSIDE] * len(IDS))
    outside = answers(ledger.index, ledger.seq, [OUTSIDE] * len(IDS))
    missing = answers(ledger.index, ledger.seq, [NO_TIME] * len(IDS))
    untimed = answers(ledger.index, ledger.seq)
    assert [a[1] for a in inside] == [a[1] for a in missing] == [a[1] for a in untimed]
    assert inside[0] == ("denied", "restriction")
    assert outside == BEFORE
    start = to_micros(START)
    edges = answers(ledger.index, ledger.seq, [start, start - 1, OUTSIDE - 1, OUTSIDE, 0, 0])
    # de at from, us just before it, none just before to, gone (erased) at to.
    assert [a[1] for a in edges[:4]] == ["restriction", "default", "restriction", "erased"]


def test_answers_as_of_before_a_restriction_and_after_its_lift_are_as_they_were(
    ledger: Ledger,
) -> None:
    before = ledger.seq
    placed = place(ledger, 1, ("EEA", "US"))
    lifted = lift(ledger, 1)
    index = ledger.index
    assert answers(index, before) == BEFORE
    assert answers(index, placed)[:2] == [("denied", "restriction"), ("denied", "restriction")]
    assert answers(index, lifted) == BEFORE
    assert index.code_of("p", placed, "us") == cd.Code(cd.make("restriction", False))
    assert index.code_of("p", lifted, "us") == cd.Code(cd.make("default", True))


def test_placing_and_lifting_touch_no_row(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    index = ledger.index
    eff = index.purposes["p"].eff.copy()

    def never(*_: object) -> None:
        raise AssertionError("no row is recomputed for a restriction")

    monkeypatch.setattr(index, "recompute_all", never)
    monkeypatch.setattr(index, "_recompute", never)
    place(ledger, 1, ("*",))
    lift(ledger, 1)
    assert np.array_equal(index.purposes["p"].eff, eff)


def test_single_and_numeric_answers_apply_the_same_overlay(ledger: Ledger) -> None:
    ledger.register("42", "DE")
    place(ledger, 1, ("EEA",), window=True)
    index = ledger.index
    seq = ledger.seq
    codes, _ = index.number_codes(
        "p", seq, np.array([42, 42, 43]), times=np.array([INSIDE, OUTSIDE, INSIDE])
    )
    assert [cd.Code(int(c)).basis for c in codes] == ["restriction", "default", "unknown"]
    inside = START + timedelta(days=1)

    def basis(user_id: str, when: datetime | None) -> str:
        code = index.code_of("p", seq, user_id, content_time=when)
        assert code is not None
        return code.basis

    assert basis("de", inside) == "restriction"
    assert basis("de", END) == "choice"
    assert basis("gone", None) == "erased"
    found = index.answer_of("p", seq, "de", content_time=inside)
    assert found is not None
    assert found.restriction is not None
    assert found.restriction.id == 1
    outside = index.answer_of("p", seq, "de", content_time=END)
    assert outside is not None
    assert (outside.code, outside.restriction) == (cd.Code(cd.make("choice", True)), None)


def test_a_restriction_on_another_purpose_changes_nothing_here(ledger: Ledger) -> None:
    ledger(ev.PurposeCreated(purpose="q", title="Q", defaults=POLICY, unknown_subject="denied"))
    place(ledger, 1, ("*",), purpose="q")
    assert answers(ledger.index, ledger.seq) == BEFORE


def test_allowed_in_counts_known_allowed_subjects_of_the_jurisdictions(ledger: Ledger) -> None:
    index = ledger.index
    assert index.allowed_in("p", frozenset({"*"}), None) == 3  # de, us, none; not gone
    assert index.allowed_in("p", frozenset({"EEA"}), None) == 1
    assert index.allowed_in("p", frozenset({"EEA"}), None, skip=["de"]) == 0
    place(ledger, 1, ("DE",))
    assert index.allowed_in("p", frozenset({"*"}), None) == 2
    assert index.allowed_in("p", frozenset({"*"}), exclude=1) == 3


def test_a_never_seen_id_has_no_jurisdiction_however_full_the_row_arrays_are() -> None:
    led = Ledger(ConsentIndex())
    led(ev.PurposeCreated(purpose="p", title="P", defaults=POLICY, unknown_subject="granted"))
    place(led, 1, ("DE",))
    for i in range(1100):  # past the first capacity: every row a German subject
        led.register(str(i), "DE")
        assert len(led.index.jur) > led.index.n_rows  # the spare slot that NO_ROW reads
    codes, _ = led.index.codes("p", led.seq, pa.array(["1099", "never"], pa.string()))
    assert [cd.Code(int(c)).basis for c in codes] == ["restriction", "unknown"]
    numbers, _ = led.index.number_codes("p", led.seq, np.array([5, 999_999]))
    assert [cd.Code(int(c)).basis for c in numbers] == ["restriction", "unknown"]


def general_path_codes(
    index: ConsentIndex, monkeypatch: pytest.MonkeyPatch, seq: int, ids: pa.Array, times: Any
) -> Any:
    """codes() with the folded codes turned off: the general overlay only."""
    with monkeypatch.context() as m:
        m.setattr(index, "_folded", lambda *_: None)
        return index.codes("p", seq, ids, times=times)[0]


PLACES = ("DE", "FR", "US", "BR", None)


def random_step(
    led: Ledger, rng: random.Random, step: int, users: list[str], placed: list[int]
) -> None:
    """One random event (or 400 registrations) of a history over purpose p."""
    roll = rng.random()
    if roll < 0.3 or not users:
        for _ in range(rng.choice((1, 1, 400))):
            users.append(str(len(users)) if rng.random() < 0.7 else f"u{len(users)}")
            led.register(users[-1], rng.choice(PLACES))
    elif roll < 0.45:
        led.choose(rng.choice(users), rng.choice(("granted", "denied")))
    elif roll < 0.55:
        led(ev.JurisdictionChanged(user_id=rng.choice(users), purpose="p", previous=None,
                                   jurisdiction=rng.choice(PLACES)))  # fmt: skip
    elif roll < 0.6:
        led(ev.SubjectErased(user_id=rng.choice(users), purpose="p"))
    elif roll < 0.67:
        bases = rng.choice(({}, {"BR": "not_offered"}, {"EEA": "not_offered", "*": "consent"}))
        led(ev.PolicyChanged(purpose="p", defaults=POLICY, unknown_subject="granted",
                             legal_bases=bases))  # fmt: skip
    elif roll < 0.87:
        placed.append(step + 1)
        scope = tuple(rng.sample(("EEA", "DE", "US", "BR", "*"), rng.choice((1, 2))))
        place(led, step + 1, scope, window=rng.random() < 0.6)
    elif placed:
        lift(led, placed.pop(rng.randrange(len(placed))))


@pytest.mark.parametrize("seed", range(6))
def test_folded_codes_answer_as_the_general_overlay_does_through_any_history(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random histories: registrations past the first capacity, choices, moves, erasures,
    policy changes with not_offered, restrictions placed and lifted (up to five windowed at
    once, past what the class bits hold). After every step, at the head and as of every earlier
    seq, with and without times, the folded answer equals the general one."""
    rng = random.Random(seed)
    led = Ledger(ConsentIndex())
    folded_answers = 0
    fold = led.index._folded_codes

    def counted(*args: Any) -> Any:
        nonlocal folded_answers
        folded_answers += 1
        return fold(*args)

    monkeypatch.setattr(led.index, "_folded_codes", counted)
    led(ev.PurposeCreated(purpose="p", title="P", defaults=POLICY, unknown_subject="granted"))
    users: list[str] = []
    placed: list[int] = []
    seqs = [led.seq]
    for step in range(60):
        random_step(led, rng, step, users, placed)
        seqs.append(led.seq)
        ids = pa.array([*rng.sample(users, min(len(users), 50)), "never", "bad id"], pa.string())
        times = np.array(
            [rng.choice((INSIDE, OUTSIDE, NO_TIME, to_micros(START) - 1)) for _ in range(len(ids))],
            dtype=np.int64,
        )
        for seq in (led.seq, rng.choice(seqs)):
            for given in (times, None):
                folded = led.index.codes("p", seq, ids, times=given)[0]
                general = general_path_codes(led.index, monkeypatch, seq, ids, given)
                assert folded.tolist() == general.tolist(), (step, seq, given is None)
                numbers = np.array([int(u) for u in ids.to_pylist() if u.isdigit()], np.int64)
                at = [i for i, u in enumerate(ids.to_pylist()) if u.isdigit()]
                picked = None if given is None else given[at]
                by_number = led.index.number_codes("p", seq, numbers, times=picked)[0]
                assert by_number.tolist() == general[at].tolist()
    assert led.index.n_rows > 1024  # the arrays grew past their first capacity on the way
    assert folded_answers > 50  # and the folded codes answered often
