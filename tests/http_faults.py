"""An HTTP proxy the tests control, between a client and a live server: it forwards requests, or
answers the next ones with an error status, or cuts a response off part-way through its body."""

from __future__ import annotations

import http.client
import socket
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Fault:
    """What to do to one request: answer `status` (with Retry-After), or cut after `cut_after`
    bytes of the upstream body."""

    status: int | None = None
    retry_after: int | None = None
    cut_after: int | None = None


class FaultProxy:
    """A proxy on 127.0.0.1 forwarding to an upstream port, with faults queued per request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults: deque[Fault] = deque()
        self.always: Fault | None = None
        self.requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                with proxy.lock:
                    proxy.requests += 1
                    fault = proxy.faults.popleft() if proxy.faults else proxy.always
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if fault is not None and fault.status is not None:
                    self._answer_status(fault)
                    return
                self._forward(body, fault.cut_after if fault else None)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def _answer_status(self, fault: Fault) -> None:
                payload = b'{"type":"about:blank","title":"injected","status":%d}' % (
                    fault.status or 503
                )
                self.send_response(fault.status or 503)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(payload)))
                if fault.retry_after is not None:
                    self.send_header("Retry-After", str(fault.retry_after))
                self.end_headers()
                self.wfile.write(payload)

            def _forward(self, body: bytes | None, cut_after: int | None) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                while block := response.read1(64 * 1024):
                    if cut_after is not None and sent + len(block) > cut_after:
                        part = block[: max(0, cut_after - sent)]
                        if part:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                        # Gone without the terminating chunk, as a failing server would be.
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        upstream.close()
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    sent += len(block)
                self.wfile.write(b"0\r\n\r\n")
                upstream.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """http://127.0.0.1:port."""
        return f"http://127.0.0.1:{self.port}"

    def next(self, *faults: Fault) -> None:
        """Apply these faults to the next requests, one each, in order."""
        with self.lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        """Forward everything again and zero the request count."""
        with self.lock:
            self.faults.clear()
            self.always = None
            self.requests = 0


@contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    """A running FaultProxy in front of upstream_port."""
    proxy = FaultProxy(upstream_port)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()
