"""The in-memory read index on its own: events in, codes out, through compaction and growth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from service.readindex import index as ix
from service.readindex.index import INVALID, ConsentIndex, Stale, decode, numeric_mask

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Ev:
    """An event row as the index reads it."""

    seq: int
    kind: str
    user_id: str | None = None
    purpose: str | None = None
    data: dict[str, Any] | None = None
    actor: str = "t"
    ticket: str | None = None

    @property
    def at(self) -> datetime:
        return T0 + timedelta(seconds=self.seq)


class Ledger:
    """Feeds numbered events to an index."""

    def __init__(self, index: ConsentIndex) -> None:
        self.index, self.seq = index, 0

    def __call__(self, kind: str, user_id: str | None = None, **data: Any) -> int:
        self.seq += 1
        purpose = data.pop("purpose", "p" if user_id else None)
        self.index.apply([Ev(self.seq, kind, user_id, purpose, data)])
        return self.seq


@pytest.fixture
def ledger() -> Ledger:
    index = ConsentIndex()
    led = Ledger(index)
    led(
        "purpose_created",
        purpose="p",
        defaults={"EEA": "denied", "*": "granted"},
        unknown_subject="denied",
    )
    return led


def answers(index: ConsentIndex, seq: int, ids: list[str | None]) -> list[tuple[str, str] | None]:
    codes, stale = index.codes("p", seq, pa.array(ids, pa.string()))
    assert stale == []
    return [None if c == INVALID else decode(int(c)) for c in codes]


def test_numeric_and_other_ids_resolve_to_their_subjects(ledger: Ledger) -> None:
    ledger("subject_registered", "42", jurisdiction="DE")
    ledger("subject_registered", "u-7", jurisdiction="US")
    ledger("choice_set", "u-7", state="denied")
    got = answers(ledger.index, ledger.seq, ["42", "u-7", "43", "bad id", None, "042"])
    assert got == [
        ("denied", "default"),
        ("denied", "choice"),
        ("denied", "unknown"),
        None,
        None,
        ("denied", "unknown"),
    ]


def test_answers_survive_compaction_into_the_sorted_and_dense_arrays(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ix, "COMPACT_AFTER", 10)
    ids = [str(n) for n in range(1000, 1040)]
    for n, user_id in enumerate(ids):
        ledger("subject_registered", user_id, jurisdiction="DE" if n % 2 else "US")
    assert ledger.index.extra_numbers == {} or len(ledger.index.extra_numbers) <= 10
    assert ledger.index.dense is not None
    got = answers(ledger.index, ledger.seq, ids)
    assert got == [("denied" if n % 2 else "granted", "default") for n in range(40)]


def test_sparse_numeric_ids_use_the_sorted_array(ledger: Ledger) -> None:
    for user_id in ("1", "1000000000000", "999999999999999999"):
        ledger("subject_registered", user_id, jurisdiction="US")
    ledger.index.compact()
    assert ledger.index.dense is None
    got = answers(ledger.index, ledger.seq, ["1", "1000000000000", "999999999999999999", "2"])
    assert [g[1] if g else None for g in got] == ["default", "default", "default", "unknown"]


def test_an_earlier_as_of_uses_the_policy_of_then_for_untouched_subjects(ledger: Ledger) -> None:
    ledger("subject_registered", "5", jurisdiction="US")
    before = ledger.seq
    ledger("policy_changed", purpose="p", defaults={"*": "denied"}, unknown_subject="granted")
    assert answers(ledger.index, before, ["5", "6"]) == [
        ("granted", "default"),
        ("denied", "unknown"),
    ]
    assert answers(ledger.index, ledger.seq, ["5", "6"]) == [
        ("denied", "default"),
        ("granted", "unknown"),
    ]


def test_subjects_changed_after_as_of_are_left_to_the_database(ledger: Ledger) -> None:
    ledger("subject_registered", "5", jurisdiction="US")
    before = ledger.seq
    ledger("choice_set", "5", state="denied")
    codes, stale = ledger.index.codes("p", before, pa.array(["5", "6"]))
    assert stale == [0]
    assert ledger.index.code_of("p", before, "5") is None
    _, stale_numbers = ledger.index.number_codes("p", before, np.array([5, 6], dtype=np.int64))
    assert stale_numbers == [0]


def test_seqs_outside_memory_and_missing_purposes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(Stale):
        ledger.index.codes("p", ledger.seq + 1, pa.array(["1"]))
    with pytest.raises(KeyError):
        ledger.index.codes("nope", ledger.seq, pa.array(["1"]))


def test_overrides_erasure_and_expiry_follow_the_resolution_rule(ledger: Ledger) -> None:
    ledger("subject_registered", "9", jurisdiction="US")
    ledger("choice_set", "9", state="granted")
    ledger(
        "override_placed",
        "9",
        override_id=1,
        state="denied",
        expires_at=(T0 + timedelta(seconds=100)).isoformat(),
    )
    assert answers(ledger.index, ledger.seq, ["9"]) == [("denied", "override")]
    while ledger.seq < 100:
        ledger("key_created", name=f"k{ledger.seq}", role="app")
    ledger("override_expired", "9", override_id=1)
    assert answers(ledger.index, ledger.seq, ["9"]) == [("granted", "choice")]
    ledger("subject_erased", "9")
    assert answers(ledger.index, ledger.seq, ["9"]) == [("denied", "erased")]


def test_snapshot_pages_come_in_byte_order_with_other_ids_merged(ledger: Ledger) -> None:
    ids = ["9", "10", "100", "2", "B", "a", "_x", "0", "1:2", "19"]
    for user_id in ids:
        ledger("subject_registered", user_id, jurisdiction="US")
    for compacted in (False, True):
        if compacted:
            ledger.index.compact()
        seen: list[str] = []
        for page_ids, _, _ in ledger.index.snapshot_pages("p", ledger.seq, page=3):
            seen.extend(page_ids.to_pylist())
        assert seen == sorted(ids, key=lambda u: u.encode()), compacted


@pytest.mark.parametrize(
    ("text", "numeric"),
    [
        ("0", True),
        ("7", True),
        ("123456789012345678", True),
        ("1234567890123456789", False),
        ("007", False),
        ("00", False),
        ("", False),
        ("1a", False),
        ("١٢", False),
    ],
)
def test_plain_numbers_are_recognised_exactly(text: str, numeric: bool) -> None:
    assert bool(numeric_mask(pa.array([text]))[0]) is numeric
    assert ix._is_numeric(text) is numeric


def test_lexicographic_order_of_numbers_matches_string_order() -> None:
    keys = np.array([1, 10, 100, 2, 9, 19, 0, 999999999999999999, 1000], dtype=np.int64)
    order = ix._lexicographic_order(keys)
    assert [str(k) for k in keys[order]] == sorted(str(k) for k in keys)
