"""The ID directory: from a user ID (text, or a number for numeric IDs) to the subject's row.

Numeric user IDs (canonical digit strings) live in a sorted int64 array whose positions give the
subjects' rows, with a direct table when the IDs are dense enough; other IDs, and IDs registered
since the last compaction, live in dicts. Rows never move once given.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from service.domain.validation import USER_ID_PATTERN

NO_ROW = -1
BAD_ID = -2
DENSE_SLACK = 1_000_000  # a direct table may be this much larger than 4 entries per ID
POWERS_OF_TEN = np.array([10**i for i in range(19)], dtype=np.int64)
PAD = np.array([10**i for i in range(20)], dtype=np.uint64)
LEX_SLICE = 1 << 20

IntArray = npt.NDArray[np.int64]


class Directory:
    """Which row each known user ID has."""

    def __init__(self) -> None:
        self.keys: IntArray = np.empty(0, dtype=np.int64)  # sorted numeric IDs
        self.key_rows = np.empty(0, dtype=np.int32)  # the row of each key
        self.extra: dict[str, int] = {}  # IDs that are not plain numbers -> row
        self.extra_numbers: dict[int, int] = {}  # numeric IDs since the last compaction -> row
        self._recent: tuple[IntArray, IntArray] | None = None
        self.dense: npt.NDArray[np.int32] | None = None
        self.dense_lo = 0
        self.lex = np.empty(0, dtype=np.int32)  # positions of `keys` in byte order of the text

    def load(self, numbers: IntArray, others: Sequence[str]) -> IntArray:
        """Fill an empty directory: numbers (any order) get the first rows in sorted order,
        then the other IDs in the order given. Returns the sort order applied to `numbers`."""
        order: IntArray = np.argsort(numbers, kind="stable")
        self.keys = numbers[order]
        self.key_rows = np.arange(len(numbers), dtype=np.int32)
        self._index_keys()
        for i, user_id in enumerate(others):
            self.extra[user_id] = len(numbers) + i
        return order

    def row_of(self, user_id: str) -> int:
        """The row of a known subject, or NO_ROW."""
        if not is_numeric(user_id):
            return self.extra.get(user_id, NO_ROW)
        value = int(user_id)
        if self.dense is not None:
            offset = value - self.dense_lo
            if 0 <= offset < len(self.dense) and self.dense[offset] != NO_ROW:
                return int(self.dense[offset])
        else:
            i = int(np.searchsorted(self.keys, value))
            if i < len(self.keys) and self.keys[i] == value:
                return int(self.key_rows[i])
        return self.extra_numbers.get(value, NO_ROW)

    def add(self, user_id: str, row: int) -> None:
        """Give a new ID its row."""
        if is_numeric(user_id):
            self.extra_numbers[int(user_id)] = row
            self._recent = None
        else:
            self.extra[user_id] = row

    @property
    def uncompacted(self) -> int:
        """How many numeric IDs wait outside the sorted array."""
        return len(self.extra_numbers)

    def rows_for(self, ids: pa.Array) -> IntArray:
        """Rows for an Arrow string array of IDs: NO_ROW if unknown, BAD_ID if malformed/null."""
        n = len(ids)
        rows = np.full(n, BAD_ID, dtype=np.int64)
        if n == 0:
            return rows
        numeric = numeric_mask(ids)
        at_numeric = np.flatnonzero(numeric)
        if len(at_numeric):
            values = pc.cast(ids.filter(pa.array(numeric)), pa.int64()).to_numpy()
            rows[at_numeric] = self.rows_of_numbers(values)
        others = np.flatnonzero(~numeric)
        if len(others):
            # Only IDs that are not plain numbers need the full pattern (and the dict).
            texts = ids.take(pa.array(others))
            ok = pc.fill_null(pc.match_substring_regex(texts, USER_ID_PATTERN), False)
            ok_np = ok.to_numpy(zero_copy_only=False)
            valid = others[ok_np]
            if len(valid):
                get = self.extra.get
                names = texts.filter(ok).to_pylist()
                rows[valid] = [get(t, NO_ROW) for t in names]
        return rows

    def rows_of_numbers(self, values: IntArray) -> IntArray:
        """Rows of numeric IDs (NO_ROW where unknown): a direct table when IDs are dense."""
        if self.dense is not None:
            offset = values - self.dense_lo
            got = np.take(self.dense, offset, mode="clip")
            # Below the table wraps around to far beyond its length: one unsigned comparison.
            inside = offset.view(np.uint64) < np.uint64(len(self.dense))
            out: IntArray = np.where(inside, got, np.int64(NO_ROW))
        elif len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, values), len(self.keys) - 1)
            out = np.where(self.keys[pos] == values, self.key_rows[pos], NO_ROW).astype(np.int64)
        else:
            out = np.full(len(values), NO_ROW, dtype=np.int64)
        if self.extra_numbers:
            missing = np.flatnonzero(out == NO_ROW)
            if len(missing):
                keys, rows = self._recent_numbers()
                pos = np.minimum(np.searchsorted(keys, values[missing]), len(keys) - 1)
                out[missing] = np.where(keys[pos] == values[missing], rows[pos], NO_ROW)
        return out

    def _recent_numbers(self) -> tuple[IntArray, IntArray]:
        if self._recent is None:
            keys = np.fromiter(self.extra_numbers.keys(), np.int64, len(self.extra_numbers))
            rows = np.fromiter(self.extra_numbers.values(), np.int64, len(self.extra_numbers))
            order = np.argsort(keys)
            self._recent = (keys[order], rows[order])
        return self._recent

    def _index_keys(self) -> None:
        """Derive what lookups and snapshots need from the keys: the direct table from numeric
        ID to row (when the IDs are dense enough) and their byte order as text."""
        self.lex = _lexicographic_order(self.keys)
        self.dense, self.dense_lo = None, 0
        if len(self.keys):
            lo, span = int(self.keys[0]), int(self.keys[-1] - self.keys[0]) + 1
            if span <= 4 * len(self.keys) + DENSE_SLACK:
                dense = np.full(span, NO_ROW, dtype=np.int32)
                dense[self.keys - lo] = self.key_rows
                self.dense, self.dense_lo = dense, lo

    def compact(self, lock: threading.RLock) -> None:
        """Fold numeric IDs registered since the last compaction into the sorted key array.

        Only the thread that applies events calls this. Rows never move, and the new arrays
        are built aside and swapped in at once under `lock`, so readers (a snapshot being
        streamed) keep a consistent set of the old ones and are not held up while they are
        built.
        """
        new = dict(self.extra_numbers)
        if not new:
            return
        shadow = Directory()
        keys = np.concatenate([self.keys, np.fromiter(new.keys(), np.int64, len(new))])
        rows = np.concatenate([self.key_rows, np.fromiter(new.values(), np.int32, len(new))])
        order = np.argsort(keys, kind="stable")
        shadow.keys, shadow.key_rows = keys[order], rows[order]
        shadow._index_keys()
        with lock:
            self.keys, self.key_rows = shadow.keys, shadow.key_rows
            self.lex, self.dense, self.dense_lo = shadow.lex, shadow.dense, shadow.dense_lo
            for number in new:
                self.extra_numbers.pop(number, None)
            self._recent = None

    def in_byte_order(self, page: int) -> Iterator[tuple[pa.Array, IntArray]]:
        """Every known ID with its row, in user_id byte order, page by page.

        The caller holds the index lock while this takes the arrays (the first step); the key
        arrays are then read lock-free: compaction swaps in new ones rather than changing
        these, and rows never move.
        """
        keys, key_rows, lex = self.keys, self.key_rows, self.lex
        others = sorted(
            [*self.extra.items(), *((str(n), r) for n, r in self.extra_numbers.items())]
        )
        return _byte_order_pages(keys, key_rows, lex, others, page)


def _byte_order_pages(
    keys: IntArray,
    key_rows: npt.NDArray[np.int32],
    lex: npt.NDArray[np.int32],
    others: list[tuple[str, int]],
    page: int,
) -> Iterator[tuple[pa.Array, IntArray]]:
    strings = [u for u, _ in others]
    string_rows = np.array([r for _, r in others], dtype=np.int64)
    digits = _Digits(keys, lex)
    positions = [bisect.bisect_left(digits, u) for u in strings]
    n, s_i = len(keys), 0
    for start in range(0, max(n, 1), page):
        stop = min(start + page, n)
        here = lex[start:stop]
        rows = key_rows[here].astype(np.int64)
        ids = pc.cast(pa.array(keys[here]), pa.string())
        take = s_i
        while take < len(strings) and (positions[take] < stop or stop == n):
            take += 1
        if take > s_i:
            # IDs kept outside the sorted array that sort inside this page: merge them in.
            ids = pa.concat_arrays([ids, pa.array(strings[s_i:take], pa.string())])
            rows = np.concatenate([rows, string_rows[s_i:take]])
            order = pc.sort_indices(ids).to_numpy()
            ids, rows = ids.take(pa.array(order)), rows[order]
            s_i = take
        if len(rows):
            yield ids, rows


class _Digits(Sequence[str]):
    """The numeric IDs as strings, in byte order, for bisecting a string ID into them."""

    def __init__(self, keys: IntArray, lex: npt.NDArray[np.int32]) -> None:
        self.keys, self.lex = keys, lex

    def __len__(self) -> int:
        return len(self.lex)

    def __getitem__(self, i: Any) -> Any:
        return str(int(self.keys[self.lex[i]]))


def _lexicographic_order(keys: IntArray) -> npt.NDArray[np.int32]:
    """Positions of sorted numeric IDs ordered as strings: by the digits padded right with
    zeros, shorter first on a tie (a prefix sorts first).

    The keys are sorted, so their lengths already ascend and a stable sort on the padded value
    alone gives that order. Worked in slices to keep the transient memory small.
    """
    padded = np.empty(len(keys), dtype=np.uint64)
    for start in range(0, len(keys), LEX_SLICE):
        part = keys[start : start + LEX_SLICE]
        # Digit counts by comparison with powers of ten: exact, unlike a floating-point log10.
        lengths = np.maximum(np.searchsorted(POWERS_OF_TEN, part, side="right"), 1)
        padded[start : start + LEX_SLICE] = part.astype(np.uint64) * PAD[19 - lengths]
    order: npt.NDArray[np.int32] = np.argsort(padded, kind="stable").astype(np.int32)
    return order


def numeric_mask(ids: pa.Array) -> npt.NDArray[np.bool_]:
    """Where IDs are canonical digit strings that fit an int64 (no leading zero, <= 18 digits).

    Cheaper than a regular expression: these are most IDs, and then need no other check.
    """
    digits = pc.fill_null(pc.ascii_is_decimal(ids), False)
    length = pc.utf8_length(ids)
    short = pc.fill_null(pc.less_equal(length, 18), False)
    no_leading_zero = pc.or_(pc.invert(pc.starts_with(ids, "0")), pc.equal(length, 1))
    mask = pc.and_(pc.and_(digits, short), pc.fill_null(no_leading_zero, False))
    out: npt.NDArray[np.bool_] = mask.to_numpy(zero_copy_only=False)
    return out


def is_numeric(user_id: str) -> bool:
    """Whether one ID is kept as a number: a canonical digit string of at most 18 digits."""
    return (
        user_id.isascii()
        and user_id.isdigit()
        and (user_id == "0" or user_id[0] != "0")
        and len(user_id) <= 18
    )
