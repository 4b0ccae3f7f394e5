"""Requests gunicorn refuses before the app sees them are answered in problem+json too."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.web.problems import PROBLEM_MEDIA_TYPE
from tests.live import LiveServer, live_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server; these requests never reach its database."""
    with live_server(Path(tmp_path_factory.mktemp("server-errors"))) as live:
        yield live


def raw(live: LiveServer, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are; return the status line, the headers and the body."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, {k.lower(): v for k, v in headers.items()}, body


def test_a_request_line_over_gunicorns_limit_is_a_414_problem(served: LiveServer) -> None:
    resp = httpx.get(f"{served.base_url}/v1/changes?after={'9' * 9000}")
    assert resp.status_code == 414
    assert resp.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = resp.json()
    assert (body["status"], body["title"]) == (414, "URI Too Long")
    assert body["type"].endswith(":uri-too-long")
    assert "8190" in body["detail"]


def test_a_malformed_request_head_is_a_400_problem(served: LiveServer) -> None:
    status, headers, body = raw(served, b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n")
    assert status.startswith("HTTP/1.1 400 ")
    assert headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body)["status"] == 400


def test_an_unknown_transfer_coding_is_a_501_problem(served: LiveServer) -> None:
    request = b"POST /v1/lookup/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: zip\r\n\r\n"
    status, headers, body = raw(served, request)
    assert status.startswith("HTTP/1.1 501 ")
    assert headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert json.loads(body)["type"].endswith(":not-implemented")
