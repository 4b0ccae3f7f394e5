"""Slow clients: connections that stall mid-request are dropped after a deadline, so a few of
them cannot take every worker thread and hold the service for everyone else."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveServer, live_server

STALLED = 12  # more than the server's 2 workers x 4 threads


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[LiveServer]:
    """A live server whose client deadlines are one second."""
    with live_server(
        tmp_path,
        CONSENT_CLIENT_HEADER_TIMEOUT_SECONDS="1",
        CONSENT_CLIENT_IO_TIMEOUT_SECONDS="1",
    ) as server:
        yield server


def stall(live: LiveServer, first_bytes: bytes) -> list[socket.socket]:
    """Open connections that send the start of a request and then nothing."""
    socks = []
    for _ in range(STALLED):
        s = socket.create_connection(("127.0.0.1", live.port), timeout=30)
        s.sendall(first_bytes)
        socks.append(s)
    return socks


def answered_within(live: LiveServer) -> float:
    """Seconds until an ordinary request is answered 200."""
    started = time.monotonic()
    with urllib.request.urlopen(f"{live.base_url}/healthz", timeout=30) as response:
        assert response.status == 200
    return time.monotonic() - started


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", id="half a request head"),
        pytest.param(
            b"PUT /v1/users/u1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{",
            id="a head and one byte of its body",
        ),
    ],
)
def test_stalled_connections_are_dropped_and_never_hold_the_service(
    strict: LiveServer, first_bytes: bytes
) -> None:
    socks = stall(strict, first_bytes)
    # Without deadlines this waited for ever (measured: no answer in 60 s with 20 stalled).
    # With 1 s deadlines the stalled connections take at most a few rounds of the 8 threads.
    assert answered_within(strict) < 15
    for s in socks:
        s.close()
    # Dropping a stalled client is routine: one warning line, no traceback.
    assert "Traceback" not in strict.log()
