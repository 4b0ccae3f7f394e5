"""The input of `consent import`: a CSV or Parquet file, read in batches of an exact size from
any row on with every column as text, and its SHA-256 and size (what a progress file is for)."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from service.domain import imports
from service.domain.errors import ValidationFailed

FORMATS = ("csv", "parquet")
CSV_BLOCK = 1 << 23
DIGEST_CHUNK = 1 << 22


class Unreadable(ValidationFailed):
    """The input is not a CSV or Parquet file this command can read."""


@dataclass(frozen=True, slots=True)
class Digest:
    """What identifies an input: its SHA-256 and size."""

    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> Digest:
        """Hash the file (hashlib lets other threads run meanwhile)."""
        h = hashlib.sha256()
        size = 0
        with path.open("rb") as f:
            while block := f.read(DIGEST_CHUNK):
                h.update(block)
                size += len(block)
        return cls(h.hexdigest(), size)


@dataclass(frozen=True, slots=True)
class Source:
    """An input file: its format, column names and (Parquet) number of rows."""

    path: Path
    format: str
    names: tuple[str, ...]
    total_rows: int | None = None

    @classmethod
    def open(cls, path: Path, fmt: str | None = None) -> Source:
        """Read the header (CSV) or schema (Parquet); the format is the file's extension's
        unless given."""
        fmt = fmt or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
        if fmt == "parquet":
            try:
                meta = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                raise Unreadable(f"{path.name} is not a Parquet file: {exc}") from None
            _check_types(meta.schema_arrow)
            return cls(path, fmt, tuple(meta.schema_arrow.names), meta.metadata.num_rows)
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise Unreadable(f"{path.name}: the header is not a UTF-8 CSV line: {exc}") from None
        if not header:
            raise Unreadable(f"{path.name} is empty: a CSV import starts with a header line.")
        return cls(path, fmt, tuple(name.strip() for name in header))

    def batches(self, start: int, size: int) -> Iterator[tuple[int, pa.Table]]:
        """(number of its first row, rows) for each batch of `size` rows after the first `start`
        rows (1 is the first row after a CSV's header).

        A CSV row with the wrong number of fields ends the batches with a RowError naming it,
        after every batch before its own: Arrow leaves it out while parsing, and the batch it
        would have been in is not handed out.
        """
        malformed: list[tuple[int, str]] = []
        parts = (
            self._parquet(start, size) if self.format == "parquet" else self._csv(start, malformed)
        )
        row = start + 1
        for table in _exact(parts, size):
            if malformed and malformed[0][0] < row + table.num_rows:
                break
            yield row, table
            row += table.num_rows
        if malformed:
            raise imports.RowError(malformed[0][0], "row", malformed[0][1])

    def _parquet(self, start: int, size: int) -> Iterator[pa.RecordBatch]:
        meta = pq.ParquetFile(self.path)
        groups, skip = [], start
        for g in range(meta.num_row_groups):
            rows = meta.metadata.row_group(g).num_rows
            if skip >= rows:
                skip -= rows
            else:
                groups.append(g)
        if not groups:
            return
        for batch in meta.iter_batches(batch_size=size, row_groups=groups, columns=self.names):
            if skip:
                cut = min(skip, batch.num_rows)
                batch, skip = batch.slice(cut), skip - cut
            if batch.num_rows:
                yield batch

    def _csv(self, start: int, malformed: list[tuple[int, str]]) -> Iterator[pa.RecordBatch]:
        """The rows after the first `start`, every column text; rows with the wrong number of
        fields are left out and noted in `malformed` as (row number, why)."""

        def invalid(row: pa_csv.InvalidRow) -> str:
            if row.number is None:  # not numbered: fail rather than leave it out unnamed
                return "error"
            why = (
                f"expected {row.expected_columns} fields, found {row.actual_columns}: "
                f"{row.text[:80]!r}"
            )
            # Arrow numbers physical rows from the header's on, skipped ones included.
            malformed.append((row.number - 1, why))
            return "skip"

        try:
            yield from pa_csv.open_csv(
                self.path,
                read_options=pa_csv.ReadOptions(
                    column_names=list(self.names),
                    skip_rows=1,
                    skip_rows_after_names=start,
                    block_size=CSV_BLOCK,
                    use_threads=False,  # rows are numbered only when read in one thread
                ),
                parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in self.names},
                    strings_can_be_null=False,  # an empty cell is "", a text such as NULL is text
                ),
            )
        except pa.ArrowInvalid as exc:
            raise Unreadable(f"{self.path.name} cannot be read as CSV: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    return str(exc).removeprefix("CSV parse error: ").split("\n")[0][:200]


def _check_types(schema: pa.Schema) -> None:
    """Text columns (an integer column of user IDs too); anything else is refused, naming it."""
    problems: dict[str, list[str]] = {}
    for column in schema:
        kind = column.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
        if column.name == imports.USER_ID and pa.types.is_integer(kind):
            continue
        if not text:
            problems[column.name] = [f"Must be a text column, not {column.type}."]
    if problems:
        raise Unreadable("The Parquet file's columns are not all text.", errors=problems)


def _exact(parts: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """The same rows as tables of exactly `size` rows (the last one fewer)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for part in parts:
        while part.num_rows:
            take = min(size - held, part.num_rows)
            pending.append(part.slice(0, take))
            held += take
            part = part.slice(take)
            if held == size:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)
