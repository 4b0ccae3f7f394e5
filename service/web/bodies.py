"""Request bodies of any length (filter inputs, run members), read with as few copies as we can.

Every byte of a streamed body used to be copied about eight times before pyarrow or the line
reader saw it: werkzeug's LimitedStream (which only enforces a length these endpoints lift)
zero-fills a buffer and copies into it, and gunicorn's body and chunk readers each gather
what they return in a BytesIO, take its value and slice it. At tens of millions of IDs a
second those copies were a large part of the cost, and twice as large for an Arrow body with a
content_time column beside the IDs. So:

- a body the server ends itself (`wsgi.input_terminated`) is read without werkzeug's wrapper;
- a chunked body under gunicorn is read from gunicorn's own chunk parser, which yields each
  piece of chunk data as the socket delivered it; a read joins the pieces it needs, once;
- a large read from any other server's reader is gathered a piece at a time into one buffer.

A client gone mid-body is a ClientDisconnected (400), as werkzeug would say.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, Protocol, cast

from flask import request
from gunicorn.http.body import ChunkedReader
from werkzeug.exceptions import ClientDisconnected

UNBOUNDED = 1 << 62
BODY_PIECE = 1 << 20


class Reads(Protocol):
    """What a server's body reader offers: read(size)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes; b"" at the end."""
        ...


def chunk_pieces(raw: object) -> Iterator[bytes] | None:
    """Gunicorn's parser of this chunked body, if nothing was read through `raw` yet."""
    reader: Any = getattr(raw, "reader", None)
    buffered: Any = getattr(raw, "buf", None)
    if not isinstance(reader, ChunkedReader) or reader.parser is None or buffered is None:
        return None
    if buffered.tell() or reader.buf.tell():
        return None
    return cast(Iterator[bytes], reader.parser)


class EndedBody:
    """A body the server ends itself, read straight through."""

    closed = False

    def __init__(self, raw: Reads) -> None:
        self._raw = raw
        self._pieces = chunk_pieces(raw)
        self._held = b""  # the last piece taken from the parser,
        self._at = 0  # and how much of it was read

    def read(self, size: int = -1) -> bytes | bytearray:
        """Up to `size` bytes (all that is left with -1); b"" at the end."""
        if size is None:
            size = -1
        try:
            if self._pieces is not None:
                return self._from_pieces(size)
            if size < 0 or size <= BODY_PIECE:
                return self._raw.read(size)
            return self._read_large(size)
        except (OSError, ValueError) as error:
            self._failed()
            raise ClientDisconnected() from error
        except Exception:
            self._failed()
            raise

    def _failed(self) -> None:
        """Tell gunicorn where the next request on this connection starts is unknown."""
        if hasattr(self._raw, "failed"):
            self._raw.failed = True

    def _from_pieces(self, size: int) -> bytes:
        """Up to `size` bytes from what is held and the next pieces: one copy."""
        pieces = self._pieces
        assert pieces is not None
        held = len(self._held) - self._at
        if 0 <= size <= held:
            out = self._held[self._at : self._at + size]
            self._at += size
            return out
        parts: list[bytes | memoryview] = [memoryview(self._held)[self._at :]] if held else []
        got = held
        self._held, self._at = b"", 0
        while size < 0 or got < size:
            piece = next(pieces, None)
            if piece is None:
                break
            parts.append(piece)
            got += len(piece)
        if 0 <= size < got:  # the last piece goes past the read: hold the rest
            last = bytes(parts[-1])
            keep = len(last) - (got - size)
            parts[-1] = memoryview(last)[:keep]
            self._held, self._at = last, keep
        return b"".join(parts)

    def _read_large(self, size: int) -> bytearray:
        """A large read (one huge Arrow batch) a piece at a time into one buffer: asked for
        at once, a server's reader may grow and copy buffers of the whole size several
        times over, each time on fresh pages."""
        out = bytearray(size)
        got = 0
        with memoryview(out) as view:
            while got < size:
                piece = self._raw.read(min(BODY_PIECE, size - got))
                if not piece:
                    break
                view[got : got + len(piece)] = piece
                got += len(piece)
        del out[got:]
        return out

    def readable(self) -> bool:
        """A body is read, never written."""
        return True

    def seekable(self) -> bool:
        """A body is read once, front to back."""
        return False


def streamed_body() -> IO[bytes]:
    """The request body as a stream of any length (any number of IDs), read as directly as
    the server allows (see the module's docstring). From a server that does not end bodies
    itself, werkzeug's stream with the cap lifted."""
    environ = request.environ
    if environ.get("wsgi.input_terminated"):
        return cast(IO[bytes], EndedBody(environ["wsgi.input"]))
    # (None would fall back to the app-wide MAX_CONTENT_LENGTH: a number no body reaches.)
    request.max_content_length = UNBOUNDED
    return request.stream
