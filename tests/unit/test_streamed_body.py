"""A body the server ends itself, read straight through: large reads in pieces, errors as 400."""

from __future__ import annotations

import pytest
from gunicorn.http.body import Body, ChunkedReader
from gunicorn.http.errors import InvalidChunkSize
from gunicorn.http.unreader import IterUnreader
from werkzeug.exceptions import ClientDisconnected

from service.web import bodies
from service.web.bodies import EndedBody


class Trickle:
    """A server's body reader: at most `most` bytes a read, then an error if told."""

    def __init__(self, data: bytes, most: int, fail_after: int | None = None) -> None:
        self.data, self.most, self.at, self.fail_after = data, most, 0, fail_after
        self.asked: list[int] = []

    def read(self, size: int = -1, /) -> bytes:
        self.asked.append(size)
        if self.fail_after is not None and self.at >= self.fail_after:
            raise OSError("the client went away")
        take = len(self.data) - self.at if size < 0 else min(size, self.most)
        piece = self.data[self.at : self.at + take]
        self.at += len(piece)
        return piece


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies, "BODY_PIECE", 4)


def test_a_large_read_is_made_of_pieces_and_returns_exactly_what_was_sent() -> None:
    data = bytes(range(26))
    raw = Trickle(data, most=3)
    body = EndedBody(raw)
    assert bytes(body.read(10)) == data[:10]
    assert max(raw.asked) <= 4
    assert bytes(body.read(100)) == data[10:]
    assert body.read(5) == b""


def test_small_and_unbounded_reads_go_straight_through() -> None:
    raw = Trickle(b"abcdefgh", most=8)
    body = EndedBody(raw)
    assert body.read(2) == b"ab"
    assert body.read() == b"cdefgh"
    assert raw.asked == [2, -1]


def test_a_client_gone_mid_body_is_a_client_disconnected() -> None:
    body = EndedBody(Trickle(bytes(40), most=4, fail_after=8))
    with pytest.raises(ClientDisconnected):
        body.read(20)


# --- a chunked body read from gunicorn's own chunk parser ---------------------------------------


def chunked(data: bytes, sizes: list[int]) -> bytes:
    """`data` in chunks of these sizes (the last one takes the rest), then the last chunk."""
    out, at = b"", 0
    for size in [*sizes, len(data)]:
        piece = data[at : at + size]
        at += len(piece)
        if piece:
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def gunicorn_body(wire: bytes, delivered: int) -> Body:
    """Gunicorn's Body of a chunked request whose bytes arrive `delivered` at a time."""
    pieces = [wire[i : i + delivered] for i in range(0, len(wire), delivered)]
    return Body(ChunkedReader(object(), IterUnreader(pieces)))


@pytest.mark.parametrize("delivered", [1, 7, 64, 10_000])
def test_a_chunked_body_reads_the_same_bytes_in_reads_of_any_size(delivered: int) -> None:
    data = bytes(range(256)) * 40
    body = EndedBody(gunicorn_body(chunked(data, [3, 100, 1, 5000]), delivered))
    assert body._pieces is not None  # gunicorn's parser, not its Body.read
    got = b""
    for size in [4, 4, 0, 250, 1, 6000, 1]:
        got += body.read(size)
    got += body.read(-1)
    assert got == data
    assert body.read(10) == b""


def test_a_chunked_body_cut_short_is_a_client_disconnected_and_spoils_the_connection() -> None:
    raw = gunicorn_body(chunked(bytes(100), [40])[:50], 16)
    body = EndedBody(raw)
    with pytest.raises(ClientDisconnected):
        body.read(100)
    assert raw.failed


def test_a_malformed_chunk_size_is_raised_as_gunicorn_raises_it() -> None:
    raw = gunicorn_body(b"zz\r\nabc\r\n0\r\n\r\n", 64)
    with pytest.raises(InvalidChunkSize):
        EndedBody(raw).read(3)
    assert raw.failed
