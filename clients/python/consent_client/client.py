"""The pipeline client: batched lookups, streamed filters, snapshots and the change feed.

Bounded retries, every answer pinned to one `as_of`, and failure by exception. It fails
closed: an ID is reported allowed only when the service said so; a request that still fails
after its retries raises, and a stream cut short (a chunked body without its terminator, an
Arrow stream without its end marker, a Parquet file without its footer) is a failure, never a
shorter answer.

    from consent_client import ConsentClient

    client = ConsentClient("http://127.0.0.1:8000", os.environ["CONSENT_API_KEY"])
    result = client.lookup("model_training", ["1001", "1002"])
    kept = list(client.filter("model_training", ids))    # any number of IDs, as of one seq
    # with each content's time (aware datetimes or RFC 3339 strings; None: no time, which a
    # windowed restriction denies): a row's answer depends on when its content was processed
    kept = list(client.filter("model_training", ids, content_times=times))
    client.decision("model_training", "1001", content_time="2024-07-01T00:00:00Z")

    run = client.register_run("llm-2026-12-01", "model_training", as_of=result.as_of)
    client.record_members(run["id"], kept)               # once; the run's members
    for member in client.affected(run["id"]):            # denied since: {user_id, basis, seq}
        ...
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from datetime import datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from consent_client.times import (
    TIME_TYPE,
    ContentTimeError,
    ContentTimes,
    misaligned,
    rfc3339,
    rfc3339_texts,
    time_array,
)
from consent_client.wire import (
    ALLOWED_COLUMN,
    ARROW_STREAM,
    AS_OF_HEADER,
    CONTENT_TIME_COLUMN,
    CONTENT_TIME_PARAM,
    CONTENT_TIMES_FIELD,
    MAX_BATCH,
    MEMBER_COLUMN,
    NUMERIC_ID_PATTERN,
    NUMERIC_LIMIT,
    SNAPSHOT_SETS,
    TEXT_IDS,
    TIME_SEPARATOR,
)

T = TypeVar("T")

RETRIED_STATUSES = frozenset({429, 502, 503, 504})


class ConsentClientError(Exception):
    """Base of everything the client raises."""


class ConsentRefused(ConsentClientError):
    """The service answered with an error that retrying will not change (a 4xx).

    `problem` is the service's problem+json body.
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        detail = problem.get("detail") or problem.get("title") or "request refused"
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.problem = problem


class ConsentUnavailable(ConsentClientError):
    """The service could not answer after every retry (outage, 429/503, cut connection).

    Nothing of the failed request may be treated as allowed.
    """


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not (kept for the final message)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, and exponential backoff with full jitter between them.

    A server's Retry-After is honoured when it asks for longer than the backoff.
    """

    attempts: int = 6
    initial: float = 0.2
    maximum: float = 10.0

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt."""
        ceiling = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.maximum))
        return delay


@dataclass(frozen=True)
class LookupResult:
    """Every distinct ID asked, in allowed or denied, as of one seq."""

    purpose: str
    as_of: int
    allowed: list[str]
    denied: list[str]


@dataclass
class FilterStream:
    """The allowed IDs of a filter, in input order, as they arrive; `as_of` once known."""

    as_of: int | None
    _ids: Iterator[str] = field(repr=False)

    def __iter__(self) -> Iterator[str]:
        return self._ids


@dataclass
class AffectedStream:
    """A run's affected members as of one seq: iterate for {user_id, basis, seq} dicts.

    The answer was downloaded whole (to a temporary file) before this is returned, so
    iterating never meets a cut stream; iterate it once.
    """

    as_of: int
    _rows: Iterator[dict[str, Any]] = field(repr=False)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._rows


@dataclass(frozen=True)
class SnapshotResult:
    """Where a snapshot was written, as of which seq, and its size."""

    path: Path
    as_of: int
    bytes: int


class ConsentClient:
    """A client of one Consent Ledger service, authenticated with one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        filter_chunk: int = 1_000_000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`filter_chunk` IDs go in each filter request: a failed chunk is retried alone."""
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.filter_chunk = filter_chunk
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "consent-client"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ConsentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _attempts(self, what: str, attempt: Callable[[], T]) -> T:
        """Run `attempt` until it succeeds or the policy gives up (then ConsentUnavailable)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self.retry.wait,
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            raise ConsentUnavailable(
                f"{what} failed after {self.retry.attempts} attempts: {exc}"
            ) from exc

    @staticmethod
    def _check(response: httpx.Response) -> None:
        """Raise for anything but a 2xx: retryable statuses as _Retryable, the rest refused."""
        if response.status_code < 300:
            return
        response.read()
        if response.status_code in RETRIED_STATUSES:
            after = response.headers.get("Retry-After", "")
            raise _Retryable(
                f"HTTP {response.status_code}", float(after) if after.isdigit() else None
            )
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:200]}
        raise ConsentRefused(response.status_code, problem if isinstance(problem, dict) else {})

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One JSON request, retried; the decoded object."""

        def attempt() -> dict[str, Any]:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            self._check(response)
            body = response.json()
            if not isinstance(body, dict):
                raise _Retryable("the answer was not a JSON object")
            return body

        return self._attempts(f"{method} {path}", attempt)

    @staticmethod
    def _as_of_params(as_of: int | str | None) -> dict[str, str]:
        return {} if as_of is None else {"as_of": str(as_of)}

    # ------------------------------------------------------------------ reads

    def head(self) -> int:
        """The ledger's head seq now."""
        return int(self._json("GET", "/v1/changes", params={"limit": 1})["head"])

    def decision(
        self,
        purpose: str,
        user_id: str | int,
        *,
        as_of: int | str | None = None,
        content_time: datetime | str | None = None,
    ) -> dict[str, Any]:
        """One decision as the service gives it: {user_id, purpose, allowed, state, basis,
        legal_basis, as_of, ...}, with `restriction_id` when a restriction decided it.

        `content_time` (an aware datetime, or an RFC 3339 string with an offset or Z) is when the
        content was made or processed; a windowed restriction denies an answer without one. A
        time without an offset raises ContentTimeError before anything is sent.
        """
        params = self._as_of_params(as_of)
        if content_time is not None:
            params[CONTENT_TIME_PARAM] = rfc3339(content_time)
        path = f"/v1/lookup/{purpose}/{quote(str(user_id), safe='')}"
        return self._json("GET", path, params=params)

    def lookup(
        self,
        purpose: str,
        ids: Iterable[str | int],
        as_of: int | str | None = None,
        *,
        content_time: datetime | str | None = None,
        content_times: ContentTimes | None = None,
    ) -> LookupResult:
        """Decide any number of IDs, 10,000 a request, all as of one seq.

        Without `as_of`, the first batch's answer fixes it for the rest. With `content_times`
        (one per ID, aligned: aware datetimes, RFC 3339 strings with offsets, or None for no
        time; or an Arrow array of timestamps with a time zone or of strings), or one
        `content_time` for every ID, each ID is decided at its content's time: an ID asked at
        several times is allowed only if it is allowed at every one of them, and a windowed
        restriction denies an ID without a time. Every time is checked, and their count against
        the IDs', before anything is sent (ContentTimeError).
        """
        asked = [str(i) for i in ids]
        texts: list[str | None] | None = None
        if content_time is not None and content_times is not None:
            raise ContentTimeError("give content_time (for every ID) or content_times, not both")
        if content_time is not None:
            texts = [rfc3339(content_time)] * len(asked)
        elif content_times is not None:
            times = time_array(content_times)
            if len(times) != len(asked):
                raise misaligned(len(asked), len(times))
            texts = rfc3339_texts(times)
        said_allowed: set[str] = set()
        said_denied: set[str] = set()
        pinned = as_of
        for batch in _lookup_batches(asked, texts):
            body: dict[str, Any] = {"user_ids": [user_id for user_id, _ in batch]}
            if texts is not None:
                body[CONTENT_TIMES_FIELD] = [time for _, time in batch]
            if pinned is not None:
                body["as_of"] = pinned
            doc = self._json("POST", f"/v1/lookup/{purpose}", json=body)
            pinned = doc["as_of"]
            said_allowed.update(doc["allowed"])
            said_denied.update(doc["denied"])
        if pinned is None:  # no IDs at all: still say as of when
            pinned = self.head()
        # Fail closed: allowed only if the service said so, and never said otherwise.
        distinct = list(dict.fromkeys(asked))
        allowed = [i for i in distinct if i in said_allowed and i not in said_denied]
        kept = set(allowed)
        return LookupResult(purpose, int(pinned), allowed, [i for i in distinct if i not in kept])

    def filter(
        self,
        purpose: str,
        ids: Iterable[str | int],
        as_of: int | str | None = None,
        *,
        content_times: ContentTimes | None = None,
    ) -> FilterStream:
        """Stream any number of IDs through /v1/filter; iterate for the allowed ones in order.

        IDs go `filter_chunk` at a time; each chunk is one request, retried alone, all pinned to
        the first chunk's `as_of` (or the one given). A chunk's answer is read whole before
        any of it is yielded, so a cut answer never yields part of a chunk.

        With `content_times` (one per ID, aligned: aware datetimes, RFC 3339 strings with
        offsets, or None for no time, which a windowed restriction denies), each line carries
        its content's time. Times given as a sequence or an Arrow array are all checked here,
        and their count against the IDs' when the IDs are sized too, before anything is sent;
        times from an iterator are checked chunk by chunk, each before it is sent. Either way a
        bad time raises ContentTimeError, with its position.
        """
        stream = FilterStream(None if as_of is None else int(as_of), iter(()))
        chunks = _aligned_chunks(ids, content_times, self.filter_chunk)

        def allowed_ids() -> Iterator[str]:
            for chunk, times in chunks:
                kept, seq = self._filter_chunk(purpose, _text_body(chunk, times), stream.as_of)
                stream.as_of = seq
                yield from kept

        stream._ids = allowed_ids()
        return stream

    def _filter_chunk(self, purpose: str, body: bytes, as_of: int | None) -> tuple[list[str], int]:
        def attempt() -> tuple[list[str], int]:
            text, seq = self._stream_in(f"/v1/filter/{purpose}", body, TEXT_IDS, as_of)
            return text.decode().splitlines(), seq

        return self._attempts(f"filter of {purpose}", attempt)

    def filter_arrow(
        self,
        purpose: str,
        ids: pa.Array | pa.ChunkedArray,
        as_of: int | str | None = None,
        *,
        content_times: ContentTimes | None = None,
    ) -> tuple[pa.BooleanArray, int]:
        """A boolean mask aligned with `ids` (int64 or string) and the seq it is as of.

        Sent over the Arrow IPC path in chunks of `filter_chunk`, each retried alone. With
        `content_times` aligned with `ids` (an Arrow array of timestamps with a time zone or of
        RFC 3339 strings, or a sequence of aware datetimes, strings and None; null: no time,
        which a windowed restriction denies), each request batch carries them as its
        `content_time` column; every time is checked before anything is sent.
        """
        column = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        times = None if content_times is None else time_array(content_times)
        if times is not None and len(times) != len(column):
            raise misaligned(len(column), len(times))
        pinned = None if as_of is None else int(as_of)
        masks: list[pa.Array] = []
        for start in range(0, len(column), self.filter_chunk):
            part = column.slice(start, self.filter_chunk)
            when = None if times is None else times.slice(start, self.filter_chunk)
            mask, pinned = self._filter_arrow_chunk(purpose, part, when, pinned)
            masks.append(mask)
        if pinned is None:
            pinned = self.head()
        combined = pa.concat_arrays(masks) if masks else pa.array([], pa.bool_())
        return combined, pinned

    def _filter_arrow_chunk(
        self, purpose: str, column: pa.Array, times: pa.Array | None, as_of: int | None
    ) -> tuple[pa.Array, int]:
        fields, columns = [pa.field("user_id", column.type)], [column]
        if times is not None:  # beside the IDs, so an older service's refusal is a clear 422
            fields.append(pa.field(CONTENT_TIME_COLUMN, TIME_TYPE))
            columns.append(times)
        schema = pa.schema(fields)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_batch(pa.record_batch(columns, schema=schema))
        body = sink.getvalue().to_pybytes()

        def attempt() -> tuple[pa.Array, int]:
            data, seq = self._stream_in(f"/v1/filter/{purpose}", body, ARROW_STREAM, as_of)
            try:
                table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
            except (pa.ArrowInvalid, OSError) as exc:  # no end marker: a cut stream
                raise _Retryable(f"incomplete Arrow answer: {exc}") from exc
            mask = table.column(ALLOWED_COLUMN).combine_chunks()
            if len(mask) != len(column):
                raise _Retryable(f"Arrow answer has {len(mask)} rows for {len(column)} IDs")
            return mask, seq

        return self._attempts(f"Arrow filter of {purpose}", attempt)

    def _stream_in(
        self,
        path: str,
        body: bytes,
        content_type: str,
        as_of: int | None,
    ) -> tuple[bytes, int]:
        """POST a body, read the streamed answer whole; (bytes, Consent-As-Of)."""
        try:
            with self._http.stream(
                "POST",
                path,
                content=body,
                params=self._as_of_params(as_of),
                headers={"Content-Type": content_type},
            ) as response:
                self._check(response)
                data = response.read()
                seq = int(response.headers[AS_OF_HEADER])
        except httpx.TransportError as exc:  # includes a chunked body cut short
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        return data, seq

    def snapshot(
        self,
        purpose: str,
        path: str | os.PathLike[str],
        set: str = SNAPSHOT_SETS[0],
        *,
        format: str | None = None,
        as_of: int | str | None = None,
    ) -> SnapshotResult:
        """Download every known subject in `set` to `path` (format from its extension, else
        csv), as of one seq; written to a temporary file and renamed only when complete."""
        target = Path(path)
        fmt = format or _format_of(target)
        pinned = None if as_of is None else int(as_of)

        def attempt() -> SnapshotResult:
            nonlocal pinned
            params = {"set": set, "format": fmt, **self._as_of_params(pinned)}
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
            tmp = Path(tmp_name)
            try:
                with (
                    os.fdopen(fd, "wb") as out,
                    self._http.stream("GET", f"/v1/snapshots/{purpose}", params=params) as response,
                ):
                    self._check(response)
                    pinned = int(response.headers[AS_OF_HEADER])
                    for block in response.iter_bytes(1 << 20):
                        out.write(block)
                if fmt == "parquet":
                    pq.read_metadata(tmp)  # a file without its footer raises here
                size = tmp.stat().st_size
                os.replace(tmp, target)
                return SnapshotResult(target, pinned, size)
            except httpx.TransportError as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            except (pa.ArrowInvalid, OSError) as exc:
                raise _Retryable(f"incomplete snapshot: {exc}") from exc
            finally:
                tmp.unlink(missing_ok=True)

        return self._attempts(f"snapshot of {purpose}", attempt)

    def changes(
        self, after: int = 0, *, purpose: str | None = None, limit: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every event after the seq `after`, oldest first, following the cursor to the head.

        Each event carries its `seq`: store the last one handled and pass it as `after` to
        resume exactly there.
        """
        cursor = after
        while True:
            params: dict[str, Any] = {"after": cursor, "limit": limit}
            if purpose is not None:
                params["purpose"] = purpose
            page = self._json("GET", "/v1/changes", params=params)
            yield from page["events"]
            cursor = int(page["next_after"])
            if not page["has_more"]:
                return

    # ------------------------------------------------------------------ training runs

    def _create(
        self,
        what: str,
        send: Callable[[], dict[str, Any]],
        find: Callable[[], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """A write that is not idempotent, retried safely: an attempt whose answer was lost may
        have been applied, so every retry first looks (`find`) for what it would create, and
        sends again only when it is not there."""
        tried = False

        def attempt() -> dict[str, Any]:
            nonlocal tried
            if tried:
                found = find()
                if found is not None:
                    return found
            tried = True
            return send()

        return self._attempts(what, attempt)

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One JSON request, one attempt: transport errors and retried statuses as _Retryable."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        self._check(response)
        body = response.json()
        if not isinstance(body, dict):
            raise ConsentRefused(response.status_code, {"detail": "the answer was no object"})
        return body

    def register_run(
        self,
        name: str,
        purpose: str,
        as_of: int | str,
        *,
        model: str | None = None,
        dataset: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a training run that used the answer for `purpose` as of `as_of`; the run.

        `dataset` is {uri, sha256, rows_in?, rows_kept?}. Names are unique: a name taken by
        another run is refused (ConsentRefused, status 409). A retry after a lost answer first
        looks the run up by name, and takes it when its purpose, as_of, model and dataset are
        the ones asked for, so a run is never registered twice nor wrongly refused.
        """
        body = {"name": name, "purpose": purpose, "as_of": as_of, "model": model,
                "dataset": dataset}  # fmt: skip

        def find() -> dict[str, Any] | None:
            run = self.find_run(name, purpose=purpose, model=model)
            if run is None:
                return None
            same = run["purpose"] == purpose and run["model"] == model
            if isinstance(as_of, int) or str(as_of).isdigit():
                same = same and run["as_of"] == int(as_of)
            if dataset is not None:
                same = same and all(run["dataset"].get(k) == v for k, v in dataset.items())
            return run if same else None

        return self._create(
            f"registering run {name}", lambda: self._send("POST", "/v1/runs", json=body), find
        )

    def run(self, run_id: int, *, as_of: int | str | None = None) -> dict[str, Any]:
        """A run: its facts, its counts (members, not_allowed, affected, outstanding) and its
        remediations as of `as_of`, or else the service's read index (caught up to the run's
        registration and members first)."""
        return self._json("GET", f"/v1/runs/{run_id}", params=self._as_of_params(as_of))

    def runs(
        self,
        *,
        purpose: str | None = None,
        model: str | None = None,
        as_of: int | str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every run registered as of `as_of`, or else the service's read index (which follows
        the ledger within a poll: pass `as_of=client.head()` to see a run registered a moment
        ago), newest first, following the pages, all as of one seq."""
        params: dict[str, Any] = {"limit": 1000, **self._as_of_params(as_of)}
        if purpose is not None:
            params["purpose"] = purpose
        if model is not None:
            params["model"] = model
        while True:
            page = self._json("GET", "/v1/runs", params=params)
            yield from page["runs"]
            if not page["has_more"]:
                return
            params["before"] = page["next_before"]
            params["as_of"] = page["as_of"]  # every page as of the first's seq

    def find_run(
        self, name: str, *, purpose: str | None = None, model: str | None = None
    ) -> dict[str, Any] | None:
        """The run of that name (narrowed by purpose and model when given) as of the ledger's
        head now, or None."""
        runs = self.runs(purpose=purpose, model=model, as_of=self.head())
        return next((r for r in runs if r["name"] == name), None)

    def record_members(
        self, run_id: int, ids: Iterable[str | int] | pa.Array | pa.ChunkedArray
    ) -> dict[str, Any]:
        """Record the distinct user IDs a run used, once; the run with its counts.

        `ids` may be any iterable (sent as text) or an Arrow array or chunked array of integer
        or string IDs (sent as int64 or string), with repeats. They are first written to a
        temporary Arrow IPC stream, `filter_chunk` IDs a batch, then sent as one upload, so an
        upload can be retried whole. The server takes it all or nothing: a malformed ID
        refuses it (ConsentRefused, 422), a run with members already is a 409. A retry after a
        lost answer first reads the run: members recorded with the SHA-256 of these IDs are
        this upload's, taken as done.
        """
        fd, name = tempfile.mkstemp(prefix=f".run-{run_id}-members.", suffix=".arrows")
        spool = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                _write_id_stream(out, ids, self.filter_chunk)
            size = spool.stat().st_size
            path = f"/v1/runs/{run_id}/members"
            headers = {"Content-Type": ARROW_STREAM, "Content-Length": str(size)}

            def send() -> dict[str, Any]:
                with open(spool, "rb") as body:
                    return self._send("PUT", path, content=body, headers=headers)

            def find() -> dict[str, Any] | None:
                run = self.run(run_id)
                if run.get("members") is None:
                    return None
                return run if run.get("members_sha256") == members_sha256(spool) else None

            return self._create(f"recording the members of run {run_id}", send, find)
        finally:
            spool.unlink(missing_ok=True)

    def affected(self, run_id: int, *, as_of: int | str | None = None) -> AffectedStream:
        """The run's members denied as of `as_of`, or else the service's read index (caught up
        to the run first): {user_id, basis, seq} each (seq: the event after the run's as_of
        that denied them; None: denied before it), numeric IDs first in numeric order, then
        the others in byte order.

        Downloaded whole as ndjson to a temporary file first (retried whole, pinned to the
        first answer's seq), so a cut stream is retried or raised, never a shorter list.
        """
        pinned = None if as_of is None else str(as_of)
        fd, name = tempfile.mkstemp(prefix=f".run-{run_id}-affected.", suffix=".ndjson")
        os.close(fd)
        spool = Path(name)

        def attempt() -> int:
            nonlocal pinned
            params = {"format": "ndjson", **self._as_of_params(pinned)}
            try:
                with (
                    open(spool, "wb") as out,
                    self._http.stream(
                        "GET", f"/v1/runs/{run_id}/affected", params=params
                    ) as response,
                ):
                    self._check(response)
                    seq = int(response.headers[AS_OF_HEADER])
                    pinned = str(seq)
                    for block in response.iter_bytes(1 << 20):
                        out.write(block)
            except httpx.TransportError as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            if spool.stat().st_size and not _ends_with_newline(spool):
                raise _Retryable("the affected list ended in the middle of a line")
            return seq

        try:
            seq = self._attempts(f"affected members of run {run_id}", attempt)
        except BaseException:
            spool.unlink(missing_ok=True)
            raise

        def rows() -> Iterator[dict[str, Any]]:
            try:
                with open(spool, "rb") as lines:
                    for line in lines:
                        yield json.loads(line)
            finally:
                spool.unlink(missing_ok=True)

        return AffectedStream(seq, rows())

    def remediate(
        self,
        run_id: int,
        action: str,
        through_seq: int,
        reason: str,
        ticket: str | None = None,
    ) -> dict[str, Any]:
        """Declare the run's members affected by events up to `through_seq` handled (`action`
        one of retrained, excluded_from_next, unlearned, retained); the remediation.

        Needs a support (or admin) key. A retry after a lost answer first reads the run as of
        the ledger's head and takes an identical remediation recorded since as this one, so
        none is recorded twice. A support key cannot read the head: it reads the run as of the
        service's read index, which may not show a remediation made within its last poll, so
        that rare retry may record an identical declaration twice (counts are unchanged).
        """
        body = {"action": action, "through_seq": through_seq, "reason": reason, "ticket": ticket}
        before: set[int] = set()

        def now() -> int | None:
            try:
                return self.head()
            except ConsentRefused as exc:
                if exc.status == 403:  # a support key: the read index's seq must do
                    return None
                raise

        def find() -> dict[str, Any] | None:
            for done in self.run(run_id, as_of=now())["remediations"]:
                if done["id"] not in before and all(done[k] == v for k, v in body.items()):
                    return dict(done)
            return None

        def send() -> dict[str, Any]:
            return self._send("POST", f"/v1/runs/{run_id}/remediations", json=body)

        before.update(r["id"] for r in self.run(run_id, as_of=now())["remediations"])
        return self._create(f"remediating run {run_id}", send, find)


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _batches_of(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _lookup_batches(
    ids: list[str], times: list[str | None] | None
) -> Iterator[Sequence[tuple[str, str | None]]]:
    """(ID, time) pairs for batch lookups, at most MAX_BATCH a request, each distinct pair once.

    An ID asked at several times goes in several rounds, never twice in one request, so each
    answer is about one (ID, time) and the service's allowed and denied lists are unambiguous.
    """
    pairs = dict.fromkeys(zip(ids, times if times is not None else [None] * len(ids), strict=True))
    rounds: list[list[tuple[str, str | None]]] = []
    seen: dict[str, int] = {}
    for pair in pairs:
        repeat = seen.get(pair[0], 0)
        seen[pair[0]] = repeat + 1
        if repeat == len(rounds):
            rounds.append([])
        rounds[repeat].append(pair)
    for pairs_of_round in rounds:
        yield from _batches(pairs_of_round, MAX_BATCH)


# Characters that would break a text filter line apart; no user ID has them.
_LINE_BREAKING = re.compile(r"[\t\r\n]")


def _text_body(ids: list[str], times: pa.Array | None) -> bytes:
    """A text filter body: one line per ID, `id<TAB>time` where it has a time.

    An "ID" that would break its line (no real ID can) is sent as a blank line, which is never
    allowed, rather than as lines that might be.
    """
    if _LINE_BREAKING.search("".join(ids)):
        ids = ["" if _LINE_BREAKING.search(i) else i for i in ids]
    if times is None:
        return "".join(f"{i}\n" for i in ids).encode()
    lines = (
        f"{i}\n" if t is None or not i else f"{i}{TIME_SEPARATOR}{t}\n"
        for i, t in zip(ids, rfc3339_texts(times), strict=True)
    )
    return "".join(lines).encode()


def _aligned_chunks(
    ids: Iterable[str | int], content_times: ContentTimes | None, size: int
) -> Iterator[tuple[list[str], pa.Array | None]]:
    """IDs as text in chunks of `size`, each with its TIME_TYPE times (None: no times sent).

    Times in a sequence or an Arrow array are checked whole (and counted against sized IDs)
    before the first chunk is made, that is at once, since this checks before it yields.
    """
    if content_times is None:
        return ((list(map(str, chunk)), None) for chunk in _batches_of(ids, size))
    if isinstance(content_times, pa.Array | pa.ChunkedArray | Sequence):
        whole = time_array(content_times)
        if isinstance(ids, Sized) and len(ids) != len(whole):
            raise misaligned(len(ids), len(whole))
        return _sliced_chunks(ids, whole, size)
    return _zipped_chunks(ids, content_times, size)


def _sliced_chunks(
    ids: Iterable[str | int], times: pa.Array, size: int
) -> Iterator[tuple[list[str], pa.Array]]:
    start = 0
    for chunk in _batches_of(ids, size):
        if start + len(chunk) > len(times):
            raise misaligned(start + len(chunk), len(times))
        yield list(map(str, chunk)), times.slice(start, len(chunk))
        start += len(chunk)
    if start != len(times):
        raise misaligned(start, len(times))


def _zipped_chunks(
    ids: Iterable[str | int], times: Iterable[Any], size: int
) -> Iterator[tuple[list[str], pa.Array]]:
    missing = object()
    start = 0
    for chunk in _batches_of(zip_longest(ids, times, fillvalue=missing), size):
        if any(i is missing or t is missing for i, t in chunk):
            ids_seen = start + sum(i is not missing for i, _ in chunk)
            times_seen = start + sum(t is not missing for _, t in chunk)
            raise misaligned(ids_seen, times_seen)
        try:
            when = time_array([t for _, t in chunk])
        except ContentTimeError as exc:
            raise exc.shifted(start) from None
        yield [str(i) for i, _ in chunk], when
        start += len(chunk)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".ndjson", ".jsonl"):
        return "ndjson"
    return "csv"


def _id_column(ids: pa.Array) -> pa.Array:
    """int64 for integer IDs, string for everything else: the two columns a run's members
    upload takes."""
    if pa.types.is_integer(ids.type):
        return pc.cast(ids, pa.int64())
    if pa.types.is_string(ids.type):
        return ids
    return pc.cast(ids, pa.string())


def _write_id_stream(
    out: Any, ids: Iterable[str | int] | pa.Array | pa.ChunkedArray, batch: int
) -> None:
    """Write IDs as an Arrow IPC stream of one column, `batch` IDs a record batch."""
    if isinstance(ids, pa.ChunkedArray):
        chunks: Iterable[pa.Array] = (_id_column(c) for c in ids.chunks)
        kind = pa.int64() if pa.types.is_integer(ids.type) else pa.string()
    elif isinstance(ids, pa.Array):
        chunks = [_id_column(ids)]
        kind = pa.int64() if pa.types.is_integer(ids.type) else pa.string()
    else:
        chunks = (pa.array([str(i) for i in part], pa.string()) for part in _batches_of(ids, batch))
        kind = pa.string()
    schema = pa.schema([pa.field(MEMBER_COLUMN, kind)])
    with pa.ipc.new_stream(out, schema) as writer:
        for chunk in chunks:
            for start in range(0, len(chunk), batch):
                part = chunk.slice(start, batch)
                writer.write_batch(pa.record_batch([part], schema=schema))


def members_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 the service gives the members in an IDs stream file (`members_sha256`):
    the distinct numeric IDs ascending as little-endian int64, then each other ID, in byte
    order, followed by a newline."""
    column = pa.ipc.open_stream(pa.memory_map(str(path))).read_all().column(0)
    values = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if pa.types.is_integer(values.type):
        small = pc.less(values, NUMERIC_LIMIT)
        numbers = values.filter(small)
        texts = pc.cast(values.filter(pc.invert(small)), pa.string())
    else:
        numeric = pc.match_substring_regex(values, NUMERIC_ID_PATTERN)
        numbers = pc.cast(values.filter(numeric), pa.int64())
        texts = values.filter(pc.invert(numeric))
    numbers = pc.unique(numbers)
    numbers = numbers.take(pc.sort_indices(numbers))
    texts = pc.unique(texts)
    texts = texts.take(pc.sort_indices(texts))
    digest = hashlib.sha256(numbers.to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    for text in texts.to_pylist():
        digest.update(f"{text}\n".encode())
    return digest.hexdigest()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
