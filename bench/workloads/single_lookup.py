"""The single lookup under wrk, beside the bare Flask baseline under the same load."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import clients
from bench.population import ID_BASE, PURPOSE
from bench.report import GIB, Figure
from bench.traffic import UNKNOWN_SHARE
from bench.workloads.session import Session

LUA_SCRIPT = Path(__file__).resolve().parent.parent / "lookup.lua"
WRK_CONNECTIONS = 8
WRK_THREADS = 2


@dataclass(frozen=True)
class WrkResult:
    """What wrk measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    bad_status: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(port: int, seconds: int, token: str, subjects: int) -> WrkResult:
    """Wrk with 8 connections and 2 threads over random known and unknown IDs."""
    env = dict(os.environ)
    env.update(
        BENCH_TOKEN=token,
        BENCH_ID_BASE=str(ID_BASE),
        BENCH_SUBJECTS=str(subjects),
        BENCH_UNKNOWN_SHARE=str(UNKNOWN_SHARE),
        BENCH_PURPOSE=PURPOSE,
    )
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{clients.HOST}:{port}/",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    data = json.loads(match.group(1))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        bad_status=data["bad_status"],
    )


def single_lookup(s: Session) -> None:
    """Wrk against the single lookup, then against the bare Flask baseline, back to back."""
    p = s.profile
    subjects = s.population.size
    run_wrk(s.server.port, p.warmup_seconds, s.pipeline_token, subjects)
    service = run_wrk(s.server.port, p.wrk_seconds, s.pipeline_token, subjects)
    run_wrk(s.baseline.port, p.warmup_seconds, s.pipeline_token, subjects)
    bare = run_wrk(s.baseline.port, p.wrk_seconds, s.pipeline_token, subjects)
    for name, w in (("single lookup", service), ("bare Flask baseline", bare)):
        s.result.check(
            f"{name}: wrk saw only 2xx answers and no socket errors",
            w.errors == 0 and w.bad_status == 0,
            f"{w.bad_status} non-2xx answers, {w.errors} socket errors of {w.requests}",
        )
    ratio = service.rate / bare.rate if bare.rate else None
    s.add(
        Figure(
            "lookup.rps",
            "single lookup over HTTP, requests/s",
            service.rate,
            "req/s",
            baseline=bare.rate,
            baseline_what="(bare Flask)",
            ratio=ratio,
            target="≥ 0.8× bare Flask (N = 1M)",
            met=ratio is not None and ratio >= 0.8,
        )
    )
    s.add(
        Figure(
            "lookup.p50",
            "single lookup p50",
            service.p50_ms,
            "ms",
            baseline=bare.p50_ms,
            baseline_what="(bare Flask)",
            ratio=service.p50_ms / bare.p50_ms if bare.p50_ms else None,
        )
    )
    s.add(
        Figure(
            "lookup.p99",
            "single lookup p99",
            service.p99_ms,
            "ms",
            baseline=bare.p99_ms,
            baseline_what="(bare Flask)",
            ratio=service.p99_ms / bare.p99_ms if bare.p99_ms else None,
            target="≤ 5 ms (N = 1M)",
            met=service.p99_ms <= 5.0,
        )
    )
    rss = s.server.workers_rss()
    s.add(
        Figure(
            "rss.warm",
            "workers' RSS after warm-up (sum of 2)",
            float(rss),
            "bytes",
            baseline=float(s.baseline.workers_rss()),
            baseline_what="(bare Flask)",
            target="≤ 1 GiB (N = 10M)",
            met=rss <= GIB,
        )
    )
