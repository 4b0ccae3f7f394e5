"""Prometheus metrics: requests and latency by route and status, decisions by basis, ledger head
and index lag, aggregated across gunicorn's workers when it runs them (multiprocess mode)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request

from service.readindex import codes as cd
from service.reads.consistent import head_seq, read_transaction

if TYPE_CHECKING:
    from prometheus_client.core import Metric

# Seconds: the single lookup sits near the bottom, streams of millions of IDs near the top.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30, 60, 300)  # fmt: skip


class Instruments:
    """The service's metrics, made once per process.

    prometheus_client picks single- or multi-process storage when it is first imported, from
    PROMETHEUS_MULTIPROC_DIR; gunicorn's master imports this package before its settings can
    set that, so the library is imported here, in the worker, on first use.
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["method", "route", "status"]
        self.requests = Counter("consent_http_requests_total", "HTTP requests answered", labels)
        self.latency = Histogram(
            "consent_http_request_duration_seconds",
            "Time to the response's first byte (a stream's body is not included)",
            labels,
            buckets=LATENCY_BUCKETS,
        )
        self.decisions = Counter(
            "consent_decisions_total",
            "Decisions answered by lookups and filters, by basis; malformed IDs are 'invalid'",
            ["purpose", "basis", "allowed"],
        )
        # Each worker writes its own; multiprocess mode keeps the live worker furthest behind.
        self.index_seq = Gauge(
            "consent_index_seq",
            "The ledger seq the read index of the worker furthest behind has caught up to",
            multiprocess_mode="livemin",
        )
        self.index_caught_up = Gauge(
            "consent_index_caught_up_timestamp_seconds",
            "When the read index of the worker furthest behind was last known current (Unix time)",
            multiprocess_mode="livemin",
        )
        self.index_rebuilds = Counter(
            "consent_index_rebuilds_total",
            "Read indexes built anew because they trailed the ledger by more than "
            "CONSENT_INDEX_REBUILD_LAG events (a bulk import), summed over workers",
        )
        self.index_rebuild_seconds = Gauge(
            "consent_index_rebuild_seconds",
            "How long the last rebuild of a worker's read index took (the longest of the workers)",
            multiprocess_mode="max",
        )
        self.head_seq = Gauge(
            "consent_ledger_head_seq",
            "The ledger's head seq, read from the database at scrape time",
            multiprocess_mode="max",
        )
        # Labelled children by (method, route, status): .labels() takes a lock and builds a
        # key on every call, a few microseconds on each request otherwise.
        self._routes: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._decisions: dict[tuple[str, int], Any] = {}

    def per_route(self, labels: tuple[str, str, str]) -> tuple[Any, Any]:
        """The request counter and latency histogram of one method, route and status."""
        pair = self._routes.get(labels)
        if pair is None:
            pair = self._routes[labels] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        return pair

    def decided(self, purpose: str, code: int) -> Any:
        """The decision counter of one purpose and decision code."""
        child = self._decisions.get((purpose, code))
        if child is None:
            basis, allowed = _CODE_LABELS.get(code, ("invalid", "false"))
            child = self._decisions[(purpose, code)] = self.decisions.labels(
                purpose, basis, allowed
            )
        return child


_made: list[Instruments] = []
_making = threading.Lock()


def instruments() -> Instruments:
    """This process's metrics, made by the first thread to ask (the poll thread and a request
    may ask at once; registering the metrics twice would fail)."""
    if not _made:
        with _making:
            if not _made:
                _made.append(Instruments())
    return _made[0]


# (basis, allowed) label values of every one-byte decision code.
_CODE_LABELS: dict[int, tuple[str, str]] = cd.labels()


def count_codes(purpose: str, codes: npt.NDArray[np.uint8]) -> None:
    """Count a batch of decision codes (one vectorised pass, then one increment per kind)."""
    if len(codes) == 0:
        return
    counts = np.bincount(codes, minlength=cd.INVALID + 1)
    m = instruments()
    for code in np.flatnonzero(counts).tolist():
        m.decided(purpose, code).inc(int(counts[code]))


def count_code(purpose: str, code: cd.Code) -> None:
    """Count one decision."""
    instruments().decided(purpose, code.value).inc()


def index_caught_up(seq: int, at: float) -> None:
    """Record that this worker's index was current at seq at Unix time `at`."""
    m = instruments()
    m.index_seq.set(seq)
    m.index_caught_up.set(at)


def index_rebuilt(seconds: float) -> None:
    """Count a rebuild of this worker's index, which took `seconds`."""
    m = instruments()
    m.index_rebuilds.inc()
    m.index_rebuild_seconds.set(seconds)


def _start_timer() -> None:
    g.request_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("request_started")
    if started is not None:
        rule = request.url_rule
        # The route pattern, never the raw path: user IDs must not become label values.
        labels = (request.method, rule.rule if rule is not None else "unmatched",
                  str(response.status_code))  # fmt: skip
        request_counter, latency = instruments().per_route(labels)
        request_counter.inc()
        latency.observe(time.perf_counter() - started)
    return response


class _Fixed:
    """A collector answering metric families gathered beforehand."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _head_seq() -> int | None:
    """The ledger head, or None when the database cannot say (the scrape still answers)."""
    try:
        with read_transaction(consistent=False):
            return head_seq()[0]
    except sa.exc.SQLAlchemyError:
        return None


def _lag(families: list[Metric], head: int | None) -> list[Metric]:
    """Derived gauges: how far the furthest-behind index trails the ledger, in seqs and seconds."""
    from prometheus_client.core import GaugeMetricFamily

    values = {s.name: s.value for f in families for s in f.samples}
    out: list[Metric] = []
    caught_up = values.get("consent_index_caught_up_timestamp_seconds")
    if caught_up:
        out.append(
            GaugeMetricFamily(
                "consent_index_lag_seconds",
                "Seconds since the read index of the worker furthest behind was last current",
                value=max(0.0, time.time() - caught_up),
            )
        )
    index_seq = values.get("consent_index_seq")
    if head is not None and index_seq is not None:
        out.append(
            GaugeMetricFamily(
                "consent_index_lag_events",
                "Events committed that the read index of the worker furthest behind lacks",
                value=max(0.0, head - index_seq),
            )
        )
    return out


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, across workers when gunicorn runs several."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    m = instruments()
    head = _head_seq()
    if head is not None:
        m.head_seq.set(head)
    if current_app.config.get("CONSENT_METRICS_MULTIPROCESS"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    families = list(registry.collect())
    out = CollectorRegistry(auto_describe=False)
    out.register(_Fixed([*families, *_lag(families, head)]))
    return generate_latest(out), CONTENT_TYPE_LATEST


def init_app(app: Flask) -> None:
    """Time every request (registered first, so even a request refused early is counted)."""
    app.before_request(_start_timer)
    app.after_request(_observe)
