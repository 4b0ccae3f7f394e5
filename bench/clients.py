"""HTTP clients of the workloads: keep-alive JSON requests, and a chunked upload read while sent."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

HOST = "127.0.0.1"
READ_TIMEOUT = 120.0
CUT_OFF_MARGIN = 20.0

T = TypeVar("T")


def connect(port: int, timeout: float = READ_TIMEOUT) -> http.client.HTTPConnection:
    """A connection to the local server (opened on first use, kept alive after)."""
    return http.client.HTTPConnection(HOST, port, timeout=timeout)


def request_json(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send one request on a kept-alive connection; return status and the JSON object answered.

    Anything but a JSON object comes back as {"unexpected_body": the first 200 bytes}.
    """
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {"unexpected_body": data[:200].decode(errors="replace")}
    return response.status, document


def once_json(
    port: int, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection, closed afterwards (so any worker may answer)."""
    conn = connect(port, timeout=10)
    try:
        return request_json(conn, method, path, token, body)
    finally:
        conn.close()


class Watchdog:
    """Shuts a connection's socket down when an exchange outlasts its limit, so no read hangs.

    Socket timeouts alone do not bound a response that keeps trickling in.
    """

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self._fired = threading.Event()
        self._timer = threading.Timer(seconds, self._cut_off)
        self._timer.daemon = True

    def _cut_off(self) -> None:
        self._fired.set()
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)

    @property
    def fired(self) -> bool:
        """Whether the limit passed and the connection was cut off."""
        return self._fired.is_set()

    def start(self) -> None:
        """Start counting."""
        self._timer.start()

    def cancel(self) -> None:
        """Stop counting (the exchange is over)."""
        self._timer.cancel()


@dataclass
class DuplexResult:
    """What a streamed exchange gave: status, headers, what was sent, the consumer's result."""

    status: int
    headers: dict[str, str]
    parts_sent: int
    seconds: float
    consumed: Any
    send_error: str | None = None
    timed_out: bool = False
    aborted: bool = False


@dataclass
class _Sender:
    sock: Any
    head: bytes
    parts: Sequence[bytes]
    tail: bytes
    deadline: float
    sent: int = 0
    timed_out: bool = False
    error: str | None = field(default=None)

    def _chunk(self, data: bytes) -> None:
        if data:
            self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def run(self) -> None:
        try:
            self._chunk(self.head)
            for part in self.parts:
                if time.monotonic() > self.deadline:
                    self.timed_out = True
                    break
                self._chunk(part)
                self.sent += 1
            self._chunk(self.tail)
            self.sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def duplex_post(
    port: int,
    path: str,
    headers: dict[str, str],
    parts: Sequence[bytes],
    consume: Callable[[http.client.HTTPResponse], T],
    time_limit: float,
    head: bytes = b"",
    tail: bytes = b"",
) -> DuplexResult:
    """POST a chunked body from a sender thread while this thread reads the answer.

    The sender stops taking new parts after `time_limit` seconds (then still sends `tail` and
    ends the body properly), so a slow server bounds the run instead of hanging it. A server
    that buffers what it was sent and is still answering after twice that (plus a margin) is
    cut off: the result is then `aborted` and `consumed` is None. `seconds` runs from the
    first byte sent to the last byte read.
    """
    conn = connect(port)
    started = time.monotonic()
    watchdog = Watchdog(conn, time_limit * 2 + CUT_OFF_MARGIN)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        sender = _Sender(conn.sock, head, parts, tail, started + time_limit)
        thread = threading.Thread(target=sender.run, name="bench-sender", daemon=True)
        thread.start()
        watchdog.start()
        response = conn.getresponse()
        try:
            consumed: T | None = consume(response)
        except Exception:
            if not watchdog.fired:
                raise
            consumed = None
        seconds = time.monotonic() - started
        thread.join(READ_TIMEOUT)
        return DuplexResult(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            parts_sent=sender.sent,
            seconds=seconds,
            consumed=consumed,
            send_error=sender.error,
            timed_out=sender.timed_out,
            aborted=watchdog.fired,
        )
    finally:
        watchdog.cancel()
        conn.close()
