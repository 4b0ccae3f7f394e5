"""A body the server ends itself, read straight through: large reads in pieces, errors as 400."""

from __future__ import annotations

import pytest
from werkzeug.exceptions import ClientDisconnected

from service.web.api import pipeline
from service.web.api.pipeline import EndedBody


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
    monkeypatch.setattr(pipeline, "BODY_PIECE", 4)


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
