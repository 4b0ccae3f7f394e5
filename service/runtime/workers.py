"""gunicorn's threaded worker, with deadlines on every read and write of a client connection.

The stock gthread worker parses a request with its socket blocking and no timeout, so a client
that sends half a request line and stops holds a worker thread for ever; twenty such
connections made a 2-worker, 4-thread server answer nothing (measured here). Each read of the
request head now has CONSENT_CLIENT_HEADER_TIMEOUT_SECONDS and each read of the body or write
of the response CONSENT_CLIENT_IO_TIMEOUT_SECONDS (which also bounds draining a body the app
did not read, e.g. after a 401); past either, the connection is dropped.
A client trickling a byte just inside the deadline still holds a thread: put a buffering
reverse proxy in front of a service exposed to untrusted networks.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

from service.runtime.config import client_timeouts
from service.web.problems import PROBLEM_MEDIA_TYPE, problem_document

HEADER_TIMEOUT, IO_TIMEOUT = client_timeouts()


def write_problem(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Write gunicorn's own error answers as problem+json, like every answer of the app.

    gunicorn answers a request it cannot hand to the app (a request line over its limit, a
    malformed head, an unknown transfer coding) itself, in HTML; the contract says errors are
    application/problem+json, whoever answers them.
    """
    body = json.dumps(problem_document(status, reason, message or reason)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: {PROBLEM_MEDIA_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn's workers look util.write_error up at each error they answer.
util.write_error = write_problem


class DeadlineConn(TConn):  # type: ignore[misc]
    """A connection whose reads time out while its request head is parsed."""

    def init(self) -> None:
        """Set up as gunicorn does (it leaves the socket blocking), then set the deadline."""
        super().init()
        self.sock.settimeout(HEADER_TIMEOUT)


class DeadlineThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with per-read and per-write deadlines on client connections."""

    def enqueue_req(self, conn: Any) -> None:
        """Hand the connection to a thread as a DeadlineConn (same state, one method more)."""
        if type(conn) is TConn:
            conn.__class__ = DeadlineConn
        super().enqueue_req(conn)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Drain a body the app left unread within the I/O deadline (gunicorn allows 5 s)."""
        if not keepalive:
            return False
        deadline = time.monotonic() + min(IO_TIMEOUT, DEFAULT_WORKER_DATA_TIMEOUT)
        return bool(conn.parser.finish_body(deadline=deadline))

    def handle_request(self, req: Any, conn: Any) -> Any:
        """The head is parsed: allow the body and the response their own, longer deadline."""
        conn.sock.settimeout(IO_TIMEOUT)
        return super().handle_request(req, conn)
