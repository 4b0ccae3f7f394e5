"""Filter dataset files (CSV, JSON Lines, Parquet) by their user-ID column through the service.

Streamed in batches with bounded memory; a manifest beside the output proves what was done,
and with a run named, the service records the run: its dataset and the distinct kept IDs. With a
time column, each row is decided at its content's time (windowed restrictions).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from consent_client.client import ConsentClient, ConsentClientError
from consent_client.times import ContentTimeError, time_array

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
BATCH_ROWS = 1_000_000
HASH_BLOCK = 1 << 22


class DatasetError(Exception):
    """The input cannot be filtered as asked (unreadable, unknown format, no such column, a
    bad content time)."""


@dataclass(frozen=True)
class RunRequest:
    """The training run a filtered dataset is for: registered at the filter's as_of."""

    name: str
    model: str | None = None


class RunError(ConsentClientError):
    """The dataset was filtered (output and manifest written) but its run was not registered,
    or its members not recorded: the manifest claims no run. `run_id` is set when the run was
    registered without members; `cause` is the client's error."""

    def __init__(self, message: str, run_id: int | None, cause: ConsentClientError) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.cause = cause


@dataclass(frozen=True)
class FilterSummary:
    """What a filter run did: counts, the seq its answers are as of, time, and the manifest."""

    rows_in: int
    kept: int
    dropped: int
    as_of: int
    seconds: float
    manifest: Path
    run: dict[str, Any] | None = None
    untimed: int | None = None  # with a time column: rows sent without a time

    def line(self) -> str:
        """The one-line summary printed at the end."""
        untimed = "" if self.untimed is None else f" ({self.untimed:,} without a time)"
        line = (
            f"rows in {self.rows_in:,}{untimed}, kept {self.kept:,}, dropped {self.dropped:,}, "
            f"as_of {self.as_of}, {self.seconds:.1f} s"
        )
        if self.run is not None:
            line += (
                f"; run {self.run['name']} (id {self.run['id']}, {self.run['members']:,} members)"
            )
        return line


class Progress(Protocol):
    """What the filter reports progress to (a tqdm bar, or nothing)."""

    def update(self, n: int) -> Any:
        """Count n more rows as done."""


def format_of(path: Path) -> str:
    """csv, jsonl or parquet, by the file's extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DatasetError(f"{path.name}: unknown format; use one of {', '.join(sorted(FORMATS))}")
    return fmt


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def count_rows(path: Path) -> int | None:
    """Rows in the file when that is cheap to know (Parquet metadata), else None."""
    if format_of(path) != "parquet":
        return None
    try:
        return int(pq.read_metadata(path).num_rows)
    except (pa.ArrowInvalid, OSError):
        return None  # filter_file says what is wrong with it


# ------------------------------------------------------------------ readers and writers


@dataclass(frozen=True)
class TimeColumn:
    """The column holding each row's content time, and whether times without a zone are UTC."""

    name: str
    assume_utc: bool = False


class _Table:
    """Reads a file batch by batch and writes the kept rows of each batch to another."""

    def __init__(
        self, src: Path, dst: Path, column: str, batch_rows: int, times: TimeColumn | None
    ) -> None:
        self.src, self.column, self.batch_rows, self.times = src, column, batch_rows, times

    def batches(self) -> Iterator[tuple[Any, pa.Array, pa.Array | None]]:
        """(batch, its ID column, its checked content times or None) triples."""
        raise NotImplementedError

    def _checked(self, raw: pa.Array | list[Any], where: Callable[[int], str]) -> pa.Array:
        """The time column's values as sent (an empty string is no time), or DatasetError
        naming the first bad one's row (`where`) and what is wrong with it."""
        assert self.times is not None
        if isinstance(raw, pa.Array) and pa.types.is_dictionary(raw.type):
            raw = raw.dictionary_decode()
        if isinstance(raw, pa.Array) and (
            pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)
        ):
            raw = pc.if_else(pc.equal(raw, ""), pa.scalar(None, raw.type), raw)
        try:
            return time_array(raw, assume_utc=self.times.assume_utc)
        except ContentTimeError as exc:
            place = "" if exc.index is None else f"{where(exc.index)}: "
            hint = (
                " (or pass --assume-utc to read times without one as UTC)" if exc.zoneless else ""
            )
            raise DatasetError(
                f"{self.src.name}: {place}time column {self.times.name!r}: {exc.reason}{hint}"
            ) from None

    def _check_type(self, kind: pa.DataType) -> None:
        """Refuse a time column whose type can hold no content time, before anything is sent."""
        self._checked(pa.array([], kind), str)

    def write(self, batch: Any, mask: pa.BooleanArray) -> int:
        """Write the rows of batch where mask is true; return how many."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output file."""


class _ArrowTable(_Table):
    """A table read and written as Arrow record batches, through `self.writer`."""

    writer: Any
    rows_read = 0

    def _split(self, batch: Any) -> tuple[Any, pa.Array, pa.Array | None]:
        """A batch, its IDs, and its times, rows named from 1 (the CSV header not counted)."""
        first = self.rows_read
        self.rows_read += batch.num_rows
        if self.times is None:
            return batch, batch.column(self.column), None
        raw = batch.column(self.times.name)
        return (
            batch,
            batch.column(self.column),
            self._checked(raw, lambda i: f"row {first + i + 1}"),
        )

    def _require(self, names: list[str]) -> None:
        """DatasetError unless the ID column (and the time column) are among `names`."""
        for wanted in (self.column, self.times.name if self.times else None):
            if wanted is not None and wanted not in names:
                raise DatasetError(
                    f"{self.src.name}: no column {wanted!r}; it has {', '.join(names)}"
                )

    def write(self, batch: Any, mask: pa.BooleanArray) -> int:
        kept = batch.filter(mask)
        self.writer.write_batch(kept)
        return int(kept.num_rows)

    def close(self) -> None:
        self.writer.close()


class _ParquetTable(_ArrowTable):
    def __init__(
        self, src: Path, dst: Path, column: str, batch_rows: int, times: TimeColumn | None
    ) -> None:
        super().__init__(src, dst, column, batch_rows, times)
        try:
            self.file = pq.ParquetFile(src)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{src.name}: not a readable Parquet file ({exc})") from exc
        schema = self.file.schema_arrow
        self._require(schema.names)
        if times is not None:
            self._check_type(schema.field(times.name).type)
        self.writer = pq.ParquetWriter(dst, schema)

    def batches(self) -> Iterator[tuple[Any, pa.Array, pa.Array | None]]:
        for batch in self.file.iter_batches(batch_size=self.batch_rows):
            yield self._split(batch)


class _CsvTable(_ArrowTable):
    """Every column read as text, so values are written back as they were read."""

    def __init__(
        self, src: Path, dst: Path, column: str, batch_rows: int, times: TimeColumn | None
    ) -> None:
        super().__init__(src, dst, column, batch_rows, times)
        try:
            names = pcsv.open_csv(src).schema.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{src.name}: not a readable CSV file ({exc})") from exc
        self._require(names)
        self.convert = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        self.schema = pa.schema([(n, pa.string()) for n in names])
        self.writer = pcsv.CSVWriter(str(dst), self.schema)

    def batches(self) -> Iterator[tuple[Any, pa.Array, pa.Array | None]]:
        reader = pcsv.open_csv(
            self.src,
            read_options=pcsv.ReadOptions(block_size=64 << 20),
            convert_options=self.convert,
        )
        for batch in reader:
            yield self._split(batch)


class _JsonLinesTable(_Table):
    """Line by line: a kept row is written as the very line that was read."""

    def __init__(
        self, src: Path, dst: Path, column: str, batch_rows: int, times: TimeColumn | None
    ) -> None:
        super().__init__(src, dst, column, batch_rows, times)
        try:
            self.input = open(src, "rb")  # noqa: SIM115  (closed in close())
        except OSError as exc:
            raise DatasetError(f"{src.name}: cannot be read ({exc})") from exc
        self.output = open(dst, "wb")  # noqa: SIM115
        self.timed_field_seen = False

    def batches(self) -> Iterator[tuple[Any, pa.Array, pa.Array | None]]:
        lines: list[bytes] = []
        numbers: list[int] = []  # each line's number in the file, blank lines counted
        for number, line in enumerate(self.input, 1):
            if line.strip():
                lines.append(line if line.endswith(b"\n") else line + b"\n")
                numbers.append(number)
            if len(lines) == self.batch_rows:
                yield self._split(lines, numbers)
                lines, numbers = [], []
        if lines:
            yield self._split(lines, numbers)
        # A row without the field is a row without a time; a file without it is a typo.
        if self.times is not None and numbers and not self.timed_field_seen:
            raise DatasetError(f"{self.src.name}: no line has a field {self.times.name!r}")

    def _split(
        self, lines: list[bytes], numbers: list[int]
    ) -> tuple[list[bytes], pa.Array, pa.Array | None]:
        ids: list[str | None] = []
        times: list[Any] = []
        for line, number in zip(lines, numbers, strict=True):
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{self.src.name}: line {number} is not JSON ({exc})") from exc
            if not isinstance(row, dict) or self.column not in row:
                raise DatasetError(f"{self.src.name}: line {number} has no field {self.column!r}")
            value = row[self.column]
            # Only strings and non-negative integers can be IDs; anything else is dropped.
            ok = isinstance(value, str) or (type(value) is int and value >= 0)
            ids.append(str(value) if ok else None)
            if self.times is not None:
                when = row.get(self.times.name)
                self.timed_field_seen = self.timed_field_seen or self.times.name in row
                times.append(None if when == "" else when)
        if self.times is None:
            return lines, pa.array(ids, pa.string()), None
        return (
            lines,
            pa.array(ids, pa.string()),
            self._checked(times, lambda i: f"line {numbers[i]}"),
        )

    def write(self, batch: Any, mask: pa.BooleanArray) -> int:
        kept = [line for line, keep in zip(batch, mask.to_pylist(), strict=True) if keep]
        self.output.writelines(kept)
        return len(kept)

    def close(self) -> None:
        self.input.close()
        self.output.close()


TABLES: dict[str, type[_Table]] = {
    "parquet": _ParquetTable,
    "csv": _CsvTable,
    "jsonl": _JsonLinesTable,
}


def id_column(column: pa.Array) -> pa.Array:
    """IDs as the Arrow filter takes them: int64 for integer columns, else strings.

    Nulls and values that are no ID (negative numbers, text that is no user ID) are sent as
    they are and come back not allowed.
    """
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    return pc.cast(column, pa.string())


class _KeptIds:
    """The distinct kept IDs of each batch, spooled to an Arrow IPC stream file as they come,
    so a run's members cost no second reading of the output.

    A batch is made distinct and spooled on a thread of its own while the next batch is being
    filtered (one batch at a time), rather than on the filter's own thread between requests.
    Sorting and Arrow's kernels release the GIL."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=".kept-ids.", suffix=".arrows", dir=directory)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.writer: Any = None
        self.kind: pa.DataType = pa.string()
        self._spooler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-kept-ids")
        self._pending: Future[None] | None = None

    def add(self, ids: pa.Array, mask: pa.BooleanArray) -> None:
        """Keep the distinct IDs of one batch where mask is true (once the batch before is
        spooled; an error spooling it is raised here)."""
        self._settle()
        self._pending = self._spooler.submit(self._spool, ids, mask)

    def _settle(self) -> None:
        """Wait for the batch being spooled; raise what spooling it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _spool(self, ids: pa.Array, mask: pa.BooleanArray) -> None:
        kept = ids.filter(mask)
        # A sort and a neighbour comparison costs a fifth of Arrow's hash unique on integer
        # columns of many distinct values (8 ms against 46 ms of CPU for 700,000 IDs; numpy's
        # own unique took 400 ms).
        if pa.types.is_integer(kept.type) and kept.null_count == 0:
            values = np.sort(kept.to_numpy())
            kept = pa.array(values[np.concatenate(([True], values[1:] != values[:-1]))])
        else:
            kept = pc.unique(kept)
        if self.writer is None:
            self.kind = pa.int64() if pa.types.is_integer(kept.type) else pa.string()
            schema = pa.schema([pa.field("user_id", self.kind)])
            self.writer = pa.ipc.new_stream(self.file, schema)
        if len(kept):
            self.writer.write_batch(pa.record_batch([pc.cast(kept, self.kind)], ["user_id"]))

    def ids(self) -> pa.ChunkedArray:
        """Everything kept (repeats across batches included), memory-mapped from the file."""
        self._settle()
        self._spooler.shutdown()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.file.close()
        if not self.path.stat().st_size:
            return pa.chunked_array([], pa.string())
        return pa.ipc.open_stream(pa.memory_map(str(self.path))).read_all().column(0)

    def remove(self) -> None:
        """Delete the file (after the batch being spooled, whatever became of it)."""
        self._spooler.shutdown(wait=True)
        self._pending = None
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------ the whole run


def filter_file(
    client: ConsentClient,
    *,
    purpose: str,
    column: str,
    src: Path,
    dst: Path,
    as_of: int | None = None,
    progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
    run: RunRequest | None = None,
    times: TimeColumn | None = None,
) -> FilterSummary:
    """Keep the rows of `src` whose `column` the service allows for `purpose`, into `dst`.

    Every batch is answered as of one seq (the first answer's, or `as_of`). Output goes to a
    temporary file renamed into place only when everything succeeded, so a failure leaves no
    output; the manifest is written last, beside it.

    With `run`, the run is then registered at that seq with the dataset {uri of `src`, its
    SHA-256, rows_in, rows_kept}, the distinct kept IDs (collected while filtering) are
    recorded as its members, and the manifest gains `run: {id, name, model}`. If either step
    fails, RunError is raised after output and manifest are written, the manifest without run.

    With `times`, each row is sent with its content time from that column (a timestamp with a
    time zone, or RFC 3339 text with an offset; null or empty: no time, which a windowed
    restriction denies); a time that is none raises DatasetError naming its row, nothing
    written. The manifest records the column, whether zoneless times were read as UTC, and how
    many rows went without a time.
    """
    started, began = datetime.now(UTC), time.monotonic()
    if not src.is_file():
        raise DatasetError(f"{src}: no such file")
    fmt = format_of(src)
    if format_of(dst) != fmt:
        raise DatasetError(f"{dst.name}: write the same format as the input ({fmt})")
    if times is not None and times.name == column:
        raise DatasetError(f"{column!r} is the ID column; the time column must be another")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    kept_ids = _KeptIds(dst.parent) if run is not None else None
    # The input's digest is read on another thread while the rows are filtered, and a run is
    # recorded while the output's digest and the manifest are made: hashing releases the GIL.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-filter") as beside:
        input_sha256 = beside.submit(sha256_of, src)
        return _filter_file(
            client, beside, input_sha256, purpose=purpose, column=column, src=src, dst=dst,
            tmp=tmp, pinned=as_of, progress=progress, batch_rows=batch_rows, run=run,
            times=times, fmt=fmt, kept_ids=kept_ids, started=started, began=began,
        )  # fmt: skip


def _filter_file(
    client: ConsentClient,
    beside: ThreadPoolExecutor,
    input_digest: Future[str],
    *,
    purpose: str,
    column: str,
    src: Path,
    dst: Path,
    tmp: Path,
    pinned: int | None,
    progress: Progress | None,
    batch_rows: int,
    run: RunRequest | None,
    times: TimeColumn | None,
    fmt: str,
    kept_ids: _KeptIds | None,
    started: datetime,
    began: float,
) -> FilterSummary:
    """filter_file() once its checks are done, with a thread beside it for the digests."""
    rows_in = kept = untimed = 0
    try:
        table = TABLES[fmt](src, tmp, column, batch_rows, times)
        try:
            for batch, ids, when in table.batches():
                sent = id_column(ids)
                mask, pinned = client.filter_arrow(purpose, sent, pinned, content_times=when)
                untimed += 0 if when is None else when.null_count
                kept += table.write(batch, mask)
                if kept_ids is not None:
                    kept_ids.add(sent, mask)
                rows_in += len(ids)
                if progress is not None:
                    progress.update(len(ids))
        finally:
            table.close()
        if pinned is None:  # an empty input: still say as of when
            pinned = client.head()
        os.replace(tmp, dst)
    except BaseException:
        if kept_ids is not None:
            kept_ids.remove()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.monotonic() - began
    manifest = Path(f"{dst}.manifest.json")
    input_sha256 = input_digest.result()
    recording: Future[dict[str, Any]] | None = None
    if run is not None and kept_ids is not None:
        dataset = {"uri": src.resolve().as_uri(), "sha256": input_sha256, "rows_in": rows_in,
                   "rows_kept": kept}  # fmt: skip
        recording = beside.submit(_record_run, client, run, purpose, int(pinned), dataset, kept_ids)
    document: dict[str, Any] = {
        "purpose": purpose,
        "as_of": pinned,
        "service_url": client.base_url,
        "column": column,
        "time_column": None if times is None else times.name,
        **({} if times is None else {"assume_utc": times.assume_utc, "rows_without_time": untimed}),
        "input": {"path": str(src), "sha256": input_sha256, "rows": rows_in},
        "output": {"path": str(dst), "sha256": sha256_of(dst), "rows": kept},
        "kept": kept,
        "dropped": rows_in - kept,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 3),
    }
    manifest.write_text(json.dumps(document, indent=2) + "\n")
    counted = None if times is None else untimed
    summary = FilterSummary(
        rows_in, kept, rows_in - kept, int(pinned), seconds, manifest, untimed=counted
    )
    if recording is None or kept_ids is None:
        return summary
    try:
        recorded = recording.result()
    finally:
        kept_ids.remove()
    document["run"] = {"id": recorded["id"], "name": recorded["name"], "model": recorded["model"]}
    _write_atomically(manifest, json.dumps(document, indent=2) + "\n")
    return FilterSummary(
        rows_in, kept, rows_in - kept, int(pinned), seconds, manifest, recorded, counted
    )


def _record_run(
    client: ConsentClient,
    run: RunRequest,
    purpose: str,
    as_of: int,
    dataset: dict[str, Any],
    kept_ids: _KeptIds,
) -> dict[str, Any]:
    """Register the run and record its members; RunError saying which step failed."""
    try:
        registered = client.register_run(run.name, purpose, as_of, model=run.model, dataset=dataset)
    except ConsentClientError as exc:
        raise RunError(f"the run {run.name} was not registered: {exc}", None, exc) from exc
    try:
        return client.record_members(registered["id"], kept_ids.ids())
    except ConsentClientError as exc:
        raise RunError(
            f"the run {run.name} (id {registered['id']}) was registered but its members were "
            f"not recorded: {exc}",
            int(registered["id"]),
            exc,
        ) from exc


def _write_atomically(path: Path, text: str) -> None:
    """Replace a file's content all at once: a reader sees the old text or the new."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(name, path)
