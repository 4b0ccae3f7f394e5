"""CPU time used by processes outside the benchmark while it runs, which distorts its figures."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 2.0
OUR_DATABASE_PREFIX = "bench_"
REPORT_AT_LEAST_SECONDS = 1.0


@dataclass(frozen=True)
class ProcessSample:
    """One process as /proc shows it: parent, start time, command, CPU seconds so far."""

    pid: int
    parent: int
    start: int
    command: str
    cpu_seconds: float


def processes() -> dict[int, ProcessSample]:
    """Every process now running, by PID."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        name = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
        fields = stat[stat.rfind(b")") + 2 :].split()
        found[int(entry)] = ProcessSample(
            pid=int(entry),
            parent=int(fields[1]),
            start=int(fields[19]),
            command=command or name,
            cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        )
    return found


def is_ours(sample: ProcessSample, table: dict[int, ProcessSample], root: int) -> bool:
    """The benchmark, its descendants, and PostgreSQL's work for it (its own databases, shared
    background processes); everything else is interference."""
    if sample.command.startswith("postgres:"):
        words = sample.command.split()
        client = any(w.startswith(("127.0.0.1(", "[local]", "::1(")) for w in words)
        return not client or (len(words) > 3 and words[3].startswith(OUR_DATABASE_PREFIX))
    pid = sample.pid
    for _ in range(64):
        if pid == root:
            return True
        current = table.get(pid)
        if current is None or current.parent in (0, pid):
            return False
        pid = current.parent
    return False


class InterferenceWatch:
    """Samples /proc every few seconds and sums the CPU seconds other processes used meanwhile.

    A process already running at the start counts from its first sample; one started later
    counts whole; one that ends between samples loses at most its last few seconds.
    """

    def __init__(self, root: int | None = None) -> None:
        self.root = root if root is not None else os.getpid()
        self._first: dict[tuple[int, int], float] = {}
        self._last: dict[tuple[int, int], tuple[float, str]] = {}
        self._started = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-interference", daemon=True)

    def _sample(self) -> None:
        with self._lock:
            self._sample_locked()

    def _sample_locked(self) -> None:
        table = processes()
        for sample in table.values():
            if is_ours(sample, table, self.root):
                continue
            key = (sample.pid, sample.start)
            self._first.setdefault(key, sample.cpu_seconds if not self._started else 0.0)
            self._last[key] = (sample.cpu_seconds, sample.command)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def start(self) -> None:
        """Take the first sample, then keep sampling in a daemon thread."""
        self._sample()
        self._started = True
        self._thread.start()

    def cpu_seconds(self) -> float:
        """CPU seconds other processes used since start, sampled now."""
        self._sample()
        with self._lock:
            return sum(cpu - self._first[key] for key, (cpu, _) in self._last.items())

    def stop(self) -> list[tuple[float, str]]:
        """Stop; return (CPU seconds, command) of other processes that used at least 1 s."""
        self._stop.set()
        self._thread.join(SAMPLE_SECONDS * 2)
        self._sample()
        with self._lock:
            used = [(cpu - self._first[k], command) for k, (cpu, command) in self._last.items()]
        return sorted((u for u in used if u[0] >= REPORT_AT_LEAST_SECONDS), reverse=True)
