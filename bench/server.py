"""Gunicorn servers started the way `make run` starts them, and their workers' resident memory."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bench.interference import processes

REPO = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
HOST = "127.0.0.1"
WORKERS = 2
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
STOP_GRACE_SECONDS = 10.0
READY_STREAK = 4
RSS_SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class Server:
    """A running gunicorn master on 127.0.0.1:port, with its log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def alive(self) -> bool:
        """Whether the master process is still running."""
        return self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The PIDs of the master's worker processes."""
        return children_of(self.process.pid)

    def workers_rss(self) -> int:
        """Resident memory of all workers together, in bytes."""
        return sum(rss_bytes(pid) for pid in self.worker_pids())

    def logged_errors(self) -> dict[str, int]:
        """Exceptions the server logged (their last line, with a count): bugs to look at.

        The server logs JSON lines; an exception is a record with `exc_info`.
        """
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        errors: dict[str, int] = {}
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            trace = record.get("exc_info") if isinstance(record, dict) else None
            if trace:
                last = str(trace).strip().splitlines()[-1][:200]
                errors[last] = errors.get(last, 0) + 1
        return errors

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, to explain a failure."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def children_of(parent: int) -> list[int]:
    """PIDs whose parent is `parent`, read from /proc."""
    return sorted(pid for pid, p in processes().items() if p.parent == parent)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class RssSampler:
    """Samples the summed RSS of some processes every 50 ms in a thread; keeps the peak."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self.before = sum(rss_bytes(p) for p in self._pids)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, sum(rss_bytes(p) for p in self._pids))

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    @property
    def growth(self) -> int:
        """Peak minus the level when sampling began."""
        return self.peak - self.before


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ready(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def gunicorn(
    log_dir: Path,
    name: str,
    *,
    app: str | None = None,
    database_url: str | None = None,
    ready_path: str = "/readyz",
    ready_timeout: float = 120.0,
    venv: Path | None = None,
) -> Iterator[Server]:
    """Run gunicorn as `make run` does (same settings module, 2 workers, access log on, the
    development user-token secret unless a real one is set).

    `app` overrides the settings' wsgi_app (the baseline); `venv` serves the service installed
    there, from `log_dir`, instead of this checkout. The server is stopped on exit, however the
    block ends.
    """
    port = free_port()
    env = dict(os.environ)
    env.update(CONSENT_BIND=f"{HOST}:{port}", CONSENT_WORKERS=str(WORKERS), CONSENT_ACCESS_LOG="-")
    if venv is None:
        env["PYTHONPATH"] = str(REPO)
    else:
        env.pop("PYTHONPATH", None)
    # The limiter runs (its cost is part of every figure) but never trips a benchmark.
    env.setdefault("CONSENT_RATE_LIMIT", "1000000 per second")
    env.setdefault("CONSENT_USER_RATE_LIMIT", "1000000 per second")
    env.setdefault("CONSENT_USER_TOKEN_DEV_SECRET", "1")
    if database_url is not None:
        env["CONSENT_DATABASE_URL"] = database_url
    executable = GUNICORN if venv is None else venv / "bin" / "gunicorn"
    command = [str(executable), "--config", "python:service.runtime.gunicorn_conf"]
    if app is not None:
        command.append(app)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO if venv is None else log_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    try:
        _wait_ready(server, ready_path, ready_timeout)
        yield server
    finally:
        stop(server)


def _wait_ready(server: Server, path: str, timeout: float) -> None:
    """Wait until several fresh connections in a row are answered 200 (both workers up)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < READY_STREAK:
        if not server.alive():
            raise RuntimeError(
                f"gunicorn exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"gunicorn not ready after {timeout:.0f} s:\n{server.log_tail()}")
        if _ready(server.port, path):
            streak += 1
        else:
            streak = 0
            time.sleep(0.1)


def stop(server: Server) -> None:
    """Stop the master and its workers: TERM, then KILL of its process group if it lingers."""
    process = server.process
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE_SECONDS)
    # Workers of a master that died abruptly are still in its group.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(STOP_GRACE_SECONDS)
