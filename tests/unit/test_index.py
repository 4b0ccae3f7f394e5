"""The in-memory read index on its own: events in, codes out, through compaction and growth."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from service.domain import events as ev
from service.readindex import codes as cd
from service.readindex import directory
from service.readindex import index as ix
from service.readindex.directory import numeric_mask
from service.readindex.index import ConsentIndex, RecordedEvent, Stale, UnknownPurpose

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = {"EEA": "denied", "*": "granted"}


class Ledger:
    """Feeds numbered typed events to an index, each one second after the last."""

    def __init__(self, index: ConsentIndex) -> None:
        self.index, self.seq = index, 0

    def __call__(self, event: ev.LedgerEvent, actor: str = "t", ticket: str | None = None) -> int:
        self.seq += 1
        at = T0 + timedelta(seconds=self.seq)
        self.index.apply([RecordedEvent(self.seq, at, event, actor, ticket)])
        return self.seq

    def register(self, user_id: str, jurisdiction: str | None) -> int:
        return self(ev.SubjectRegistered(user_id=user_id, purpose="p", jurisdiction=jurisdiction))

    def choose(self, user_id: str, state: str) -> int:
        return self(
            ev.ChoiceSet(
                user_id=user_id, purpose="p", state=state, previous=None, source="t", version=1
            )
        )


@pytest.fixture
def ledger() -> Ledger:
    led = Ledger(ConsentIndex())
    led(ev.PurposeCreated(purpose="p", title="P", defaults=POLICY, unknown_subject="denied"))
    return led


def answers(
    index: ConsentIndex, seq: int, ids: Sequence[str | None]
) -> list[tuple[str, str] | None]:
    codes, stale = index.codes("p", seq, pa.array(ids, pa.string()))
    assert stale == []
    found = [cd.Code(int(c)) for c in codes]
    return [None if c.basis == cd.INVALID_BASIS else (c.state, c.basis) for c in found]


def test_numeric_and_other_ids_resolve_to_their_subjects(ledger: Ledger) -> None:
    ledger.register("42", "DE")
    ledger.register("u-7", "US")
    ledger.choose("u-7", "denied")
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
        ledger.register(user_id, "DE" if n % 2 else "US")
    assert ledger.index.ids.uncompacted <= 10
    assert ledger.index.ids.dense is not None
    got = answers(ledger.index, ledger.seq, ids)
    assert got == [("denied" if n % 2 else "granted", "default") for n in range(40)]


def test_sparse_numeric_ids_use_the_sorted_array(ledger: Ledger) -> None:
    for user_id in ("1", "1000000000000", "999999999999999999"):
        ledger.register(user_id, "US")
    ledger.index.ids.compact(ledger.index.lock)
    assert ledger.index.ids.dense is None
    got = answers(ledger.index, ledger.seq, ["1", "1000000000000", "999999999999999999", "2"])
    assert [g[1] if g else None for g in got] == ["default", "default", "default", "unknown"]


def test_an_earlier_as_of_uses_the_policy_of_then_for_untouched_subjects(ledger: Ledger) -> None:
    ledger.register("5", "US")
    before = ledger.seq
    ledger(ev.PolicyChanged(purpose="p", defaults={"*": "denied"}, unknown_subject="granted"))
    assert answers(ledger.index, before, ["5", "6"]) == [
        ("granted", "default"),
        ("denied", "unknown"),
    ]
    assert answers(ledger.index, ledger.seq, ["5", "6"]) == [
        ("denied", "default"),
        ("granted", "unknown"),
    ]


def test_subjects_changed_after_as_of_are_left_to_the_database(ledger: Ledger) -> None:
    ledger.register("5", "US")
    before = ledger.seq
    ledger.choose("5", "denied")
    codes, stale = ledger.index.codes("p", before, pa.array(["5", "6"]))
    assert stale == [0]
    assert ledger.index.code_of("p", before, "5") is None
    _, stale_numbers = ledger.index.number_codes("p", before, np.array([5, 6], dtype=np.int64))
    assert stale_numbers == [0]


def test_seqs_outside_memory_and_missing_purposes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(Stale):
        ledger.index.codes("p", ledger.seq + 1, pa.array(["1"]))
    with pytest.raises(UnknownPurpose):
        ledger.index.codes("nope", ledger.seq, pa.array(["1"]))


def test_overrides_erasure_and_expiry_follow_the_resolution_rule(ledger: Ledger) -> None:
    ledger.register("9", "US")
    ledger.choose("9", "granted")
    expires = T0 + timedelta(seconds=100)
    ledger(
        ev.OverridePlaced(
            user_id="9", purpose="p", override_id=1, state="denied", expires_at=expires
        ),
        actor="alice",
        ticket="SUP-1",
    )
    assert answers(ledger.index, ledger.seq, ["9"]) == [("denied", "override")]
    while ledger.seq < 100:
        ledger(ev.KeyCreated(name=f"k{ledger.seq}", role="app"))
    ledger(ev.OverrideExpired(user_id="9", purpose="p", override_id=1, expires_at=expires))
    assert answers(ledger.index, ledger.seq, ["9"]) == [("granted", "choice")]
    ledger(ev.SubjectErased(user_id="9", purpose="p"))
    assert answers(ledger.index, ledger.seq, ["9"]) == [("denied", "erased")]


def test_snapshot_pages_come_in_byte_order_with_other_ids_merged(ledger: Ledger) -> None:
    ids = ["9", "10", "100", "2", "B", "a", "_x", "0", "1:2", "19"]
    for user_id in ids:
        ledger.register(user_id, "US")
    for compacted in (False, True):
        if compacted:
            ledger.index.ids.compact(ledger.index.lock)
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
    assert directory.is_numeric(text) is numeric


def test_lexicographic_order_of_numbers_matches_string_order() -> None:
    keys = np.array([1, 10, 100, 2, 9, 19, 0, 999999999999999999, 1000], dtype=np.int64)
    order = directory._lexicographic_order(keys)
    assert [str(k) for k in keys[order]] == sorted(str(k) for k in keys)


def test_a_malformed_ids_code_is_never_allowed_even_by_a_bare_bit_test() -> None:
    assert cd.INVALID & 1 == 0
    assert cd.Code(cd.INVALID).allowed is False
    assert cd.Code(cd.INVALID).basis == "invalid"
    assert not cd.allowed(cd.as_codes([cd.INVALID])).any()


@pytest.mark.parametrize("basis", cd.BASES)
@pytest.mark.parametrize("granted", [True, False])
def test_every_code_reads_back_its_basis_and_state(basis: str, granted: bool) -> None:
    code = cd.Code(cd.make(basis, granted))
    assert (code.basis, code.allowed, code.state) == (
        basis,
        granted,
        "granted" if granted else "denied",
    )
    assert bool(cd.allowed(cd.as_codes([code.value]))[0]) is granted
    assert bool(cd.known(cd.as_codes([code.value]))[0]) is (basis != "unknown")
