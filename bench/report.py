"""Figures, correctness checks, the printed tables and bench/RESULTS.md."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.databases import LABELS, describe
from bench.server import REPO

GIB = 1 << 30
# Other processes using this share of the CPUs during a run make its figures unreliable.
INTERFERENCE_WARNING = 0.05
MIB = 1 << 20


@dataclass
class Figure:
    """One measured figure beside its baseline, with the target it is held to."""

    key: str
    what: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Check:
    """A correctness check: a benchmark that returns wrong answers is worthless."""

    what: str
    ok: bool
    detail: str = ""


@dataclass
class RunResult:
    """Everything measured for one database and one N."""

    kind: str
    subjects: int
    seed_seconds: float | None = None
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    foreign_cpu_share: float | None = None
    code: str | None = None

    @property
    def label(self) -> str:
        """PostgreSQL or SQLite."""
        return LABELS[self.kind]

    def figure(self, key: str) -> Figure | None:
        """The figure with this key, if it was measured."""
        return next((f for f in self.figures if f.key == key), None)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        """Record a correctness check and say loudly when it fails."""
        self.checks.append(Check(what, ok, detail))
        if not ok:
            print(
                f"\n!!! CORRECTNESS FAILURE [{self.label} N={self.subjects:,}] {what}: {detail}\n",
                flush=True,
            )
        return ok


def number(value: float | None, unit: str = "") -> str:
    """A figure for a table: thousands separated, a sensible number of digits, its unit."""
    if value is None:
        return "—"
    if unit == "bytes":
        return f"{value / MIB:,.1f} MiB"
    if unit == "ms":
        return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "%":
        return f"{value:+.1f} %"
    if unit == "yes/no":
        return "yes" if value else "NO"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def ratio_text(value: float | None) -> str:
    """A ratio such as 0.42×."""
    return "—" if value is None else f"{value:,.2f}×" if value < 100 else f"{value:,.0f}×"


def met_text(met: bool | None) -> str:
    """yes, NO, or a dash where no target applies."""
    return "—" if met is None else "yes" if met else "NO"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, padded so it also reads well as plain text."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def run_table(result: RunResult) -> str:
    """One run's figures: what, figure, baseline, ratio, target, met?"""
    rows = [
        [
            f.what + (f" ({f.note})" if f.note else ""),
            number(f.value, f.unit),
            f"{number(f.baseline, f.unit)} {f.baseline_what}".strip()
            if f.baseline is not None
            else "—",
            ratio_text(f.ratio),
            f.target or "—",
            met_text(f.met),
        ]
        for f in result.figures
    ]
    return markdown_table(["what", "figure", "baseline", "ratio", "target", "met?"], rows)


def side_by_side(results: Sequence[RunResult], subjects: int) -> str:
    """PostgreSQL and SQLite beside each other for one N."""
    runs = {r.kind: r for r in results if r.subjects == subjects}
    kinds = [k for k in LABELS if k in runs]
    keys: list[str] = []
    for k in kinds:
        keys += [f.key for f in runs[k].figures if f.key not in keys]
    header = ["what", "target"]
    for k in kinds:
        header += [LABELS[k], "baseline", "ratio", "met?"]
    rows = []
    for key in keys:
        first = next(f for k in kinds if (f := runs[k].figure(key)) is not None)
        row = [first.what, first.target or "—"]
        for k in kinds:
            f = runs[k].figure(key)
            if f is None:
                row += ["—"] * 4
                continue
            value = number(f.value, f.unit) + (f" ({f.note})" if f.note else "")
            baseline = number(f.baseline, f.unit) if f.baseline is not None else "—"
            row += [value, baseline, ratio_text(f.ratio), met_text(f.met)]
        rows.append(row)
    return markdown_table(header, rows)


def scale_table(results: Sequence[RunResult]) -> tuple[str, list[Figure]]:
    """Single-lookup and filter throughput and workers' memory across N, with the falls."""
    rows = []
    figures: list[Figure] = []
    for kind in LABELS:
        runs = sorted((r for r in results if r.kind == kind), key=lambda r: r.subjects)
        if not runs:
            continue
        for r in runs:
            lookup, text, rss = (r.figure(k) for k in ("lookup.rps", "filter.text", "rss.warm"))
            rows.append(
                [
                    LABELS[kind],
                    f"{r.subjects:,}",
                    number(lookup.value if lookup else None, "req/s"),
                    number(text.value if text else None, "IDs/s"),
                    number(rss.value if rss else None, "bytes"),
                ]
            )
        if len(runs) < 2:
            continue
        small, large = runs[0], runs[-1]
        span = f"N {small.subjects:,} → {large.subjects:,}"
        for key, what in (("lookup.rps", "single-lookup req/s"), ("filter.text", "filter IDs/s")):
            a, b = small.figure(key), large.figure(key)
            if a and b and a.value and b.value is not None:
                change = (b.value - a.value) / a.value * 100
                figures.append(
                    Figure(
                        f"scale.{key}.{kind}",
                        f"{LABELS[kind]}: {what}, {span}",
                        change,
                        "%",
                        target="fall ≤ 25 %",
                        met=change >= -25,
                    )
                )
        rss = large.figure("rss.warm")
        if rss and rss.value is not None:
            figures.append(
                Figure(
                    f"scale.rss.{kind}",
                    f"{LABELS[kind]}: workers' RSS at N {large.subjects:,}",
                    rss.value,
                    "bytes",
                    target="≤ 1 GiB at N = 10,000,000",
                    met=rss.value <= GIB,
                )
            )
    table = markdown_table(
        ["database", "N", "single lookup", "filter, text", "workers' RSS after warm-up"], rows
    )
    summary = markdown_table(
        ["what", "figure", "target", "met?"],
        [[f.what, number(f.value, f.unit), f.target, met_text(f.met)] for f in figures],
    )
    return table + "\n\n" + summary, figures


def machine() -> dict[str, str]:
    """CPUs, memory, CPU model, kernel, Python, and the code's commit."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) * 1024 / GIB:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": model,
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "code at the end": code_version(),
    }


def code_version() -> str:
    """The commit, and a fingerprint of service/ and migrations/ as they are on disk now.

    The service is often being changed while it is benchmarked; the fingerprint tells whether
    two runs measured the same code.
    """
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted([*REPO.glob("service/**/*.py"), *REPO.glob("migrations/**/*.py")]):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "migrations"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "?", ""
    state = "uncommitted changes" if dirty else "clean"
    return f"{commit} ({state}; service+migrations fingerprint {digest.hexdigest()[:10]})"


def write_results(
    path: Path,
    results: Sequence[RunResult],
    command: str,
    started: datetime,
    seconds: float,
    quick: bool,
    interference: Sequence[tuple[float, str]] = (),
) -> tuple[str, bool]:
    """Write RESULTS.md; return the text printed at the end and whether every check passed."""
    kinds = sorted({r.kind for r in results}, key=list(LABELS).index)
    sizes = sorted({r.subjects for r in results})
    checks = [(r, c) for r in results for c in r.checks]
    failures = [(r, c) for r, c in checks if not c.ok]
    scale, _ = scale_table(results)
    out = [
        "# Benchmark results",
        "",
        f"`{command}` — {'quick' if quick else 'full'} run on "
        f"{started.astimezone(UTC):%Y-%m-%d %H:%M} UTC, took {seconds / 60:.1f} min.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in machine().items()]
    out += [f"- database: {describe(k)}" for k in kinds]
    foreign = sum(cpu for cpu, _ in interference)
    share = foreign / (seconds * len(os.sched_getaffinity(0))) if seconds else 0.0
    busiest = "; ".join(f"{cpu:,.0f} s `{other[:60]}`" for cpu, other in interference[:5])
    if share >= INTERFERENCE_WARNING:
        out.append(
            f"- **other processes took {share:.0%} of the CPUs during the run** (figures of the "
            f"runs marked in the notes are understated); CPU seconds: {busiest}"
        )
    else:
        out.append(
            f"- other processes took {share:.1%} of the CPUs during the run"
            + (f" (CPU seconds: {busiest})" if busiest else "")
        )
    out += [
        "- server: gunicorn with `service.runtime.gunicorn_conf` (gthread, 2 workers × 4 threads, "
        "access log on), as `make run`; the clients, the server and the database share these CPUs.",
        "",
        "## Correctness",
        "",
    ]
    versions = sorted({r.code for r in results if r.code})
    if len(versions) > 1:
        out.append(
            "**The code changed while the benchmark ran: its runs measured different code** "
            "(see each run's `code` in the notes)."
        )
        out.append("")
    if failures:
        out.append(
            f"**{len(failures)} of {len(checks)} checks FAILED — "
            "the figures below are not to be trusted.**"
        )
        out.append("")
        out += [f"- FAILED [{r.label}, N={r.subjects:,}] {c.what}: {c.detail}" for r, c in failures]
    else:
        out.append(
            f"All {len(checks)} checks passed (answers compared with the seeded population)."
        )
    for n in sizes:
        out += ["", f"## N = {n:,} subjects", "", side_by_side(results, n)]
    out += ["", "## Scale", "", scale]
    notes = [f"- {r.label}, N={r.subjects:,}: {note}" for r in results for note in r.notes]
    if notes:
        out += ["", "## Notes", "", *notes]
    if quick:
        out += [
            "",
            "Quick run: small N and short durations. The targets are set at the N named in each "
            "target; at other N the met? column is only indicative.",
        ]
    text = "\n".join(out) + "\n"
    path.write_text(text)
    return text, not failures
