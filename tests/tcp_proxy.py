"""A TCP proxy the tests control, between the service and PostgreSQL: it forwards bytes both
ways until cut(), which drops every open connection and refuses new ones until restore()."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class TcpProxy:
    """Listens on 127.0.0.1:port and forwards to upstream_host:upstream_port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.is_cut = False
        self.stopping = False
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.is_cut:
                    self.refused += 1
                    _close(client)  # the database is "down": the connection ends at once
                    continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self.lock:
                self.open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                _close(s)
            with self.lock:
                self.open.discard(source)
                self.open.discard(sink)

    def cut(self) -> None:
        """Drop every connection now and refuse new ones."""
        with self.lock:
            self.is_cut = True
            doomed = list(self.open)
            self.open.clear()
        for s in doomed:
            _close(s)

    def restore(self) -> None:
        """Accept and forward connections again."""
        with self.lock:
            self.is_cut = False

    def close(self) -> None:
        """Stop listening and drop everything."""
        self.stopping = True
        self.cut()
        _close(self.listener)


def _close(s: socket.socket) -> None:
    with suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


@contextmanager
def tcp_proxy(upstream_host: str, upstream_port: int) -> Iterator[TcpProxy]:
    """A running TcpProxy, closed on exit."""
    proxy = TcpProxy(upstream_host, upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()
