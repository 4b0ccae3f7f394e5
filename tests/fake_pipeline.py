"""A fake of the service's pipeline reads, run in process through httpx.MockTransport.

It decodes what the client sends the way the wire format says (RFC 3339 query and JSON times,
`user_id<TAB>time` lines, an Arrow `content_time` column), records it, and answers as the ledger
would under one windowed restriction: the client's encoding is tested without a server, and a
wrong encoding gets a wrong (or refused) answer rather than a lucky one.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
import pyarrow as pa

from consent_client.wire import (
    ALLOWED_COLUMN,
    ARROW_STREAM,
    AS_OF_HEADER,
    CONTENT_TIME_COLUMN,
    CONTENT_TIME_PARAM,
    CONTENT_TIMES_FIELD,
    MEMBER_COLUMN,
    RFC3339_PATTERN,
    TIME_SEPARATOR,
)

SEQ = 42
PURPOSE = "model_training"
# The 2024-style order: EEA subjects, content processed inside [WINDOW_FROM, WINDOW_TO).
WINDOW_FROM = datetime(2024, 6, 1, tzinfo=UTC)
WINDOW_TO = datetime(2024, 9, 1, tzinfo=UTC)
RESTRICTION_ID = 7
US = [f"{1000 + i}" for i in range(6)]  # granted
EEA = [f"{2000 + i}" for i in range(6)]  # granted, but under the windowed restriction
INSIDE = "2024-07-01T12:00:00Z"
OUTSIDE = "2024-10-01T00:00:00+02:00"
ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
_RFC3339 = re.compile(RFC3339_PATTERN)


class Refused(Exception):
    """What the fake answers 422 to."""


def parse_time(text: str) -> datetime:
    """A wire time as the ledger reads one: RFC 3339 with an offset, else refused."""
    if not _RFC3339.fullmatch(text):
        raise Refused(f"{text!r} is not an RFC 3339 time with an offset")
    return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)


def decide(user_id: str, when: datetime | None) -> tuple[bool, str, int | None]:
    """(allowed, basis, restriction_id): the restriction denies inside its window, and without
    a time (fail closed)."""
    if user_id in EEA and (when is None or WINDOW_FROM <= when < WINDOW_TO):
        return False, "restriction", RESTRICTION_ID
    if user_id in US or user_id in EEA:
        return True, "default", None
    return False, "unknown_subject", None


@dataclass
class Sent:
    """One request as the fake decoded it."""

    method: str
    path: str
    params: dict[str, str]
    body: Any


@dataclass
class FakePipeline:
    """The handler of an httpx.MockTransport; `sent` lists every request it decoded."""

    sent: list[Sent] = field(default_factory=list)
    members: list[Any] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        """A transport answering from this fake."""
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (422 problem+json for what the service would refuse)."""
        try:
            return self._answer(request)
        except Refused as exc:
            problem = {"title": "Unprocessable Entity", "status": 422, "detail": str(exc)}
            return httpx.Response(422, json=problem)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        params = dict(request.url.params)
        parts = path.strip("/").split("/")
        if request.method == "GET" and path == "/v1/changes":
            return httpx.Response(200, json={"head": SEQ, "events": []})
        if request.method == "GET" and parts[:2] == ["v1", "lookup"]:
            self.sent.append(Sent("GET", path, params, None))
            raw = params.get(CONTENT_TIME_PARAM)
            allowed, basis, restriction = decide(parts[3], None if raw is None else parse_time(raw))
            doc = {"user_id": parts[3], "purpose": parts[2], "allowed": allowed,
                   "state": "granted" if allowed else "denied", "basis": basis,
                   "legal_basis": "consent", "as_of": SEQ}  # fmt: skip
            if restriction is not None:
                doc["restriction_id"] = restriction
            return httpx.Response(200, json=doc)
        if request.method == "POST" and parts[:2] == ["v1", "lookup"]:
            return self._batch(path, params, json.loads(request.content))
        if request.method == "POST" and parts[:2] == ["v1", "filter"]:
            if request.headers["Content-Type"] == ARROW_STREAM:
                return self._arrow(path, params, request.content)
            return self._text(path, params, request.content.decode())
        if request.method == "POST" and path == "/v1/runs":
            run = {**json.loads(request.content), "id": len(self.runs) + 1, "members": None}
            self.runs.append(run)
            return httpx.Response(201, json=run)
        if request.method == "PUT" and parts[-1] == "members":
            column = pa.ipc.open_stream(io.BytesIO(request.content)).read_all()[MEMBER_COLUMN]
            self.members = column.to_pylist()
            run = self.runs[int(parts[2]) - 1]
            run["members"] = len(set(self.members))
            return httpx.Response(200, json=run)
        raise AssertionError(f"the fake does not serve {request.method} {path}")

    def _batch(self, path: str, params: dict[str, str], body: dict[str, Any]) -> httpx.Response:
        self.sent.append(Sent("POST", path, params, body))
        ids: list[str] = body["user_ids"]
        times: list[str | None] = body.get(CONTENT_TIMES_FIELD, [None] * len(ids))
        if len(times) != len(ids):
            raise Refused("content_times must align with user_ids")
        # As the ledger does, each distinct ID is answered once: by its first occurrence.
        first = dict(reversed(list(zip(ids, times, strict=True))))
        answers = {i: decide(i, None if t is None else parse_time(t))[0] for i, t in first.items()}
        distinct = list(dict.fromkeys(ids))
        return httpx.Response(200, json={
            "purpose": path.rsplit("/", 1)[1], "as_of": SEQ,
            "allowed": [i for i in distinct if answers[i]],
            "denied": [i for i in distinct if not answers[i]],
        })  # fmt: skip

    def _text(self, path: str, params: dict[str, str], body: str) -> httpx.Response:
        lines = body.split("\n")
        assert lines.pop() == "", "every line ends with a newline"
        self.sent.append(Sent("POST", path, params, lines))
        kept = []
        for line in lines:
            user_id, tab, raw = line.partition(TIME_SEPARATOR)
            when = parse_time(raw) if tab else None
            if ID_RE.fullmatch(user_id) and decide(user_id, when)[0]:
                kept.append(f"{user_id}\n")
        return httpx.Response(200, text="".join(kept), headers={AS_OF_HEADER: str(SEQ)})

    def _arrow(self, path: str, params: dict[str, str], body: bytes) -> httpx.Response:
        reader = pa.ipc.open_stream(io.BytesIO(body))
        batches = list(reader)
        self.sent.append(Sent("POST", path, params, batches))
        names = reader.schema.names
        if names not in (["user_id"], ["user_id", CONTENT_TIME_COLUMN]):
            raise Refused(f"unexpected columns {names}")
        if len(names) == 2:
            kind = reader.schema.field(CONTENT_TIME_COLUMN).type
            if not (pa.types.is_timestamp(kind) and kind.tz is not None):
                raise Refused(f"content_time is {kind}, not a timestamp with a time zone")
        schema = pa.schema([pa.field(ALLOWED_COLUMN, pa.bool_())])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                ids = [None if i is None else str(i) for i in batch.column(0).to_pylist()]
                times = batch.column(1).to_pylist() if len(names) == 2 else [None] * len(ids)
                mask = [i is not None and decide(i, t)[0] for i, t in zip(ids, times, strict=True)]
                writer.write_batch(pa.record_batch([pa.array(mask, pa.bool_())], schema=schema))
        return httpx.Response(
            200, content=sink.getvalue().to_pybytes(), headers={AS_OF_HEADER: str(SEQ)}
        )
