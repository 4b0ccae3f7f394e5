"""The pipeline client against a real gunicorn: batching, streaming, pinning to one as_of,
retries through injected 503s and 429s, and failing closed on refusals and cut streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consent_client import ConsentClient, ConsentRefused, ConsentUnavailable, RetryPolicy
from tests.e2e.conftest import ALLOWED, DE, PURPOSE, US, settle
from tests.http_faults import Fault, FaultProxy
from tests.live import LiveServer

FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05)


@pytest.fixture
def client(server: LiveServer, proxy: FaultProxy) -> Iterator[ConsentClient]:
    """A pipeline client talking through the (for now faultless) proxy."""
    proxy.reset()
    with ConsentClient(proxy.url, server.tokens["pipeline"], retry=FAST) as c:
        yield c


def everyone() -> list[str]:
    return US + DE + ["alice", "bob", "never-seen", "bad id!"]


def test_lookup_batches_any_number_of_ids_as_of_one_seq(
    client: ConsentClient, proxy: FaultProxy
) -> None:
    ids = everyone() + [f"x{i}" for i in range(25_000)]  # three requests of at most 10,000
    result = client.lookup(PURPOSE, [i for i in ids if i != "bad id!"])
    assert set(result.allowed) == set(ALLOWED)
    assert len(result.allowed) + len(result.denied) == len(ids) - 1
    assert proxy.requests == 3
    assert result.as_of == client.head()


def test_filter_streams_the_allowed_ids_in_input_order_from_any_number_of_chunks(
    server: LiveServer, proxy: FaultProxy
) -> None:
    proxy.reset()
    with ConsentClient(proxy.url, server.tokens["pipeline"], retry=FAST, filter_chunk=7) as c:
        stream = c.filter(PURPOSE, everyone())
        kept = list(stream)
        assert proxy.requests == -(-len(everyone()) // 7)  # one request a chunk
        assert stream.as_of == c.head()
    assert kept == [i for i in everyone() if i in set(ALLOWED)]


def test_every_chunk_of_a_filter_is_answered_as_of_the_first_chunks_seq(
    server: LiveServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.reset()
    first_id, flipped = US[1], US[2]
    with ConsentClient(proxy.url, server.tokens["pipeline"], retry=FAST, filter_chunk=1) as c:
        stream = c.filter(PURPOSE, [first_id, flipped])
        first = next(iter(stream))
        # A write lands between the chunks; the second is still answered as of the first's seq.
        httpx.put(
            f"{server.base_url}/v1/users/{flipped}/consents/{PURPOSE}",
            json={"state": "denied"},
            headers={"Authorization": f"Bearer {server.tokens['app']}"},
        ).raise_for_status()
        settle(server)
        rest = list(stream)
        assert [first, *rest] == [first_id, flipped]
        assert c.lookup(PURPOSE, [flipped]).denied == [flipped]
    httpx.put(
        f"{server.base_url}/v1/users/{flipped}/consents/{PURPOSE}",
        json={"state": "granted"},
        headers={"Authorization": f"Bearer {server.tokens['app']}"},
    ).raise_for_status()
    settle(server)


def test_filter_arrow_answers_a_mask_aligned_with_int64_or_string_ids(
    client: ConsentClient,
) -> None:
    numbers = pa.array([int(u) for u in US + DE] + [-5, 99999999], pa.int64())
    mask, as_of = client.filter_arrow(PURPOSE, numbers)
    assert [n for n, m in zip(numbers.to_pylist(), mask.to_pylist(), strict=True) if m] == [
        int(u) for u in ALLOWED if u != "alice"
    ]
    strings = pa.array(everyone())
    mask, pinned = client.filter_arrow(PURPOSE, strings, as_of=as_of)
    assert pinned == as_of
    assert [s for s, m in zip(everyone(), mask.to_pylist(), strict=True) if m] == [
        i for i in everyone() if i in set(ALLOWED)
    ]


@pytest.mark.parametrize("name", ["allowed.parquet", "allowed.csv", "allowed.ndjson"])
def test_a_snapshot_is_written_whole_and_as_of_one_seq(
    client: ConsentClient, tmp_path: Path, name: str
) -> None:
    result = client.snapshot(PURPOSE, tmp_path / name, "allowed")
    assert result.path.exists()
    assert result.bytes > 0
    if name.endswith(".parquet"):
        ids = pq.read_table(result.path).column("user_id").to_pylist()
        assert sorted(ids) == sorted(ALLOWED)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_changes_follows_the_cursor_and_resumes_from_a_stored_seq(client: ConsentClient) -> None:
    events = list(client.changes(0, limit=7))
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert len(seqs) == len(set(seqs))
    assert seqs[-1] == client.head()
    middle = seqs[len(seqs) // 2]
    assert [e["seq"] for e in client.changes(middle, limit=5)] == [s for s in seqs if s > middle]
    only = list(client.changes(0, purpose=PURPOSE))
    assert only
    assert all(e["purpose"] == PURPOSE for e in only)


def test_503s_and_429s_are_retried_until_the_service_answers(
    client: ConsentClient, proxy: FaultProxy
) -> None:
    proxy.next(Fault(status=503, retry_after=0), Fault(status=429), Fault(status=503))
    assert set(client.lookup(PURPOSE, everyone()[:-1]).allowed) == set(ALLOWED)
    assert proxy.requests == 4


def test_a_service_that_stays_unavailable_raises_and_reports_nothing_allowed(
    client: ConsentClient, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.always = Fault(status=503)
    with pytest.raises(ConsentUnavailable, match="4 attempts"):
        client.lookup(PURPOSE, ALLOWED)
    with pytest.raises(ConsentUnavailable):
        list(client.filter(PURPOSE, ALLOWED))
    with pytest.raises(ConsentUnavailable):
        client.snapshot(PURPOSE, tmp_path / "s.parquet")
    assert not list(tmp_path.iterdir())
    assert proxy.requests == 12


@pytest.mark.parametrize("kind", ["text", "arrow", "parquet snapshot", "csv snapshot"])
def test_a_stream_cut_short_is_retried_never_taken_as_a_shorter_answer(
    client: ConsentClient, proxy: FaultProxy, tmp_path: Path, kind: str
) -> None:
    def run() -> Any:
        if kind == "text":
            return list(client.filter(PURPOSE, everyone()))
        if kind == "arrow":
            return client.filter_arrow(PURPOSE, pa.array(everyone()))[0].to_pylist()
        name = "s.parquet" if kind == "parquet snapshot" else "s.csv"
        return (tmp_path / name).read_bytes() if client.snapshot(PURPOSE, tmp_path / name) else None

    whole = run()
    proxy.reset()
    proxy.next(Fault(cut_after=10))
    assert run() == whole
    assert proxy.requests >= 2
    proxy.reset()
    proxy.always = Fault(cut_after=10)
    with pytest.raises(ConsentUnavailable):
        run()


def test_a_refusal_is_raised_at_once_without_retrying(
    server: LiveServer, proxy: FaultProxy
) -> None:
    proxy.reset()
    with (
        ConsentClient(proxy.url, "not-a-key", retry=FAST) as bad,
        pytest.raises(ConsentRefused) as refused,
    ):
        bad.lookup(PURPOSE, ["1000"])
    assert refused.value.status == 401
    assert proxy.requests == 1
    with (
        ConsentClient(proxy.url, server.tokens["pipeline"], retry=FAST) as c,
        pytest.raises(ConsentRefused) as unknown,
    ):
        c.lookup("no_such_purpose", ["1000"])
    assert unknown.value.status == 404
