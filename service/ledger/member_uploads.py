"""Reading a run's members upload (newline text or an Arrow IPC stream) into a member set.

All or nothing: the whole body is read, and a single malformed ID refuses all of it with the
line (text) or row (Arrow) numbers of the first ones found, counted from 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consent_client.wire import NUMERIC_LIMIT
from service.domain import validation
from service.domain.errors import ValidationFailed
from service.readindex.directory import numeric_mask
from service.reads.lookups import open_arrow, read_lines
from service.reads.members import IntArray, MemberSet

SHOWN_ERRORS = 20


@dataclass
class Collector:
    """IDs gathered batch by batch: numbers, other text, and where malformed ones were."""

    unit: str  # "line" or "row"
    numbers: list[IntArray] = field(default_factory=list)
    strings: list[pa.Array] = field(default_factory=list)
    seen: int = 0
    bad: int = 0
    shown: dict[str, list[str]] = field(default_factory=dict)

    def add_text(self, ids: pa.Array, shown: pa.Array | None = None) -> None:
        """A batch of IDs as text (nulls are malformed); `shown` is what to quote for each."""
        numeric = numeric_mask(ids)
        valid = numeric.copy()
        others = np.flatnonzero(~numeric)
        if len(others):
            # Only IDs that are not plain numbers need the full pattern.
            texts = ids.take(pa.array(others))
            ok = pc.fill_null(pc.match_substring_regex(texts, validation.USER_ID_PATTERN), False)
            ok_np = ok.to_numpy(zero_copy_only=False)
            valid[others] = ok_np
            if ok_np.any():
                self.strings.append(texts.filter(ok))
        if numeric.any():
            self.numbers.append(pc.cast(ids.filter(pa.array(numeric)), pa.int64()).to_numpy())
        self._note_bad(valid, ids if shown is None else shown)
        self.seen += len(ids)

    def add_numbers(self, column: pa.Array) -> None:
        """A batch of an integer column: non-negative values are IDs, nulls and negatives not."""
        kind = column.type
        valid = pc.fill_null(pc.greater_equal(column, pa.scalar(0, kind)), False).to_numpy(
            zero_copy_only=False
        )
        large = np.zeros(len(column), dtype=np.bool_)
        if kind.bit_width == 64:
            at_least = pc.greater_equal(column, pa.scalar(NUMERIC_LIMIT, kind))
            large = valid & pc.fill_null(at_least, False).to_numpy(zero_copy_only=False)
        small = valid & ~large
        if small.all():  # the usual batch: every value an ID kept as a number, no copy
            self.numbers.append(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False))
        elif small.any():
            self.numbers.append(pc.cast(column.filter(pa.array(small)), pa.int64()).to_numpy())
        if large.any():  # 19 and more digits: valid IDs, kept as text like the read index does
            self.strings.append(pc.cast(column.filter(pa.array(large)), pa.string()))
        self._note_bad(valid, column)
        self.seen += len(column)

    def _note_bad(self, valid: npt.NDArray[np.bool_], shown: pa.Array) -> None:
        bad = np.flatnonzero(~valid)
        self.bad += len(bad)
        for i in bad[: max(0, SHOWN_ERRORS - len(self.shown))].tolist():
            value = shown[i].as_py()
            quoted = "null" if value is None else repr(str(value)[:80])
            self.shown[f"{self.unit} {self.seen + i + 1}"] = [
                f"{quoted} is not a valid user ID ({validation.USER_ID_RULE})."
            ]

    def members(self) -> MemberSet:
        """The distinct members, or a 422 naming where the malformed IDs are."""
        if self.bad:
            first = next(iter(self.shown))
            raise ValidationFailed(
                f"{self.bad} malformed user ID(s) of {self.seen}, the first at {first}; "
                "nothing was recorded. Each member must be a user ID "
                f"({validation.USER_ID_RULE}).",
                errors=self.shown,
            )
        numbers = np.concatenate(self.numbers) if self.numbers else np.empty(0, np.int64)
        self.numbers.clear()
        strings = pa.concat_arrays(self.strings) if self.strings else pa.array([], pa.string())
        return MemberSet.of(numbers, strings)


def _as_text(lines: list[bytes], ascii_only: bool) -> tuple[pa.Array, pa.Array | None]:
    """Lines as text, and what to quote for them when some may not be text at all."""
    if ascii_only:
        return pa.array(lines, pa.string()), None
    # Every well-formed ID is ASCII; other lines become null, and are quoted as bytes.
    raw = pa.array(lines, pa.binary())
    ascii_line = pa.array([line.isascii() for line in lines], pa.bool_())
    text = pc.cast(pc.if_else(ascii_line, raw, pa.scalar(None, pa.binary())), pa.string())
    return text, pa.array([repr(line) for line in lines], pa.string())


def from_text(stream: IO[bytes]) -> MemberSet:
    """Members from newline-separated IDs (CRLF too); an empty line is a malformed ID."""
    collector = Collector("line")
    for lines, ascii_only in read_lines(stream):
        collector.add_text(*_as_text(lines, ascii_only))
    return collector.members()


def from_arrow(stream: IO[bytes]) -> MemberSet:
    """Members from an Arrow IPC stream of one string or integer column."""
    reader = open_arrow(stream)
    collector = Collector("row")
    for batch in reader:
        column = batch.column(0)
        if pa.types.is_integer(column.type):
            collector.add_numbers(column)
            continue
        collector.add_text(column.cast(pa.string()))
    return collector.members()
