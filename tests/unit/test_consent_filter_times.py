"""`consent filter --time-column` on CSV, JSON Lines and Parquet, against a fake of the service.

Each row goes with its content time; the rows kept are written exactly as read; bad times,
missing columns and zoneless timestamps are exit 3 with nothing written and nothing sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from consent_client import ConsentClient, cli
from tests.fake_pipeline import EEA, INSIDE, OUTSIDE, PURPOSE, US, FakePipeline

# Rows: (user_id, processed_at) and whether the windowed restriction lets them through.
ROWS: list[tuple[str, str | None, bool]] = [
    (EEA[0], INSIDE, False),
    (EEA[1], OUTSIDE, True),
    (EEA[2], None, False),  # no time: the windowed restriction denies it
    (US[0], INSIDE, True),
    (US[1], None, True),
    ("never-seen", OUTSIDE, False),
    (EEA[3], "2024-05-31T23:59:59.999999Z", True),  # just before the window
    (EEA[4], "2024-06-01T00:00:00Z", False),  # its first instant
]
KEPT = [user_id for user_id, _, allowed in ROWS if allowed]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    """The commands' client talks to a fake of the service."""
    fake = FakePipeline()

    def client(url: str, token: str) -> ConsentClient:
        return ConsentClient(url, token, transport=fake.transport())

    monkeypatch.setattr(cli, "ConsentClient", client)
    return fake


def consent_filter(*args: str) -> Result:
    """Run `consent-client filter` in process, with a key in the environment."""
    return CliRunner().invoke(
        cli.cli,
        ["filter", "--purpose", PURPOSE, "--column", "user_id", *args],
        env={"CONSENT_API_KEY": "token", "CONSENT_URL": "http://fake"},
    )


def write_csv(path: Path, rows: list[tuple[str, str | None]], time_name: str = "ts") -> Path:
    """A CSV with an ID, a time and a text column; an empty cell for no time."""
    lines = [f"user_id,{time_name},text"]
    lines += [f'{u},{t or ""},"post, by {u}"' for u, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, rows: list[tuple[str, object]]) -> Path:
    """JSON Lines with a blank line after the first record; a None time is left out or null."""
    lines = []
    for n, (user_id, when) in enumerate(rows):
        record: dict[str, object] = {"user_id": user_id, "text": f"post by {user_id}"}
        if when is not None or n % 2:
            record["ts"] = when
        lines.append(json.dumps(record))
    lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, ids: list[str], times: pa.Array) -> Path:
    """A Parquet file with an ID column, a time column and a text column."""
    table = pa.table({"user_id": ids, "ts": times, "text": [f"post by {u}" for u in ids]})
    pq.write_table(table, path)
    return path


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a CSV file, its values as the text they are."""
    strings = pcsv.ConvertOptions(
        column_types={"user_id": pa.string(), "ts": pa.string(), "text": pa.string()},
        strings_can_be_null=False,
    )
    rows: list[dict[str, str]] = pcsv.read_csv(path, convert_options=strings).to_pylist()
    return rows


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ each format, good times


def test_a_csv_filter_with_a_time_column_keeps_the_rows_allowed_at_their_times(
    fake: FakePipeline, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "posts.csv", [(u, t) for u, t, _ in ROWS])
    dst = tmp_path / "kept.csv"
    done = consent_filter("--time-column", "ts", str(src), str(dst))
    assert done.exit_code == 0, done.output
    # Kept rows are the rows read, value for value (CSV values as text, nothing reformatted).
    kept = [row for row, (_, _, allowed) in zip(csv_rows(src), ROWS, strict=True) if allowed]
    assert csv_rows(dst) == kept
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    assert manifest["time_column"] == "ts"
    assert (manifest["assume_utc"], manifest["rows_without_time"]) == (False, 2)
    assert (manifest["kept"], manifest["dropped"]) == (len(KEPT), len(ROWS) - len(KEPT))
    assert "rows in 8 (2 without a time), kept 4" in done.stderr
    batch = fake.sent[0].body[0]
    assert batch.schema.names == ["user_id", "content_time"]
    assert batch.column(1).null_count == 2


def test_a_json_lines_filter_sends_a_missing_null_or_empty_time_as_none(
    fake: FakePipeline, tmp_path: Path
) -> None:
    rows: list[tuple[str, object]] = [(u, t) for u, t, _ in ROWS]
    rows.append((US[2], ""))
    src = write_jsonl(tmp_path / "posts.jsonl", rows)
    dst = tmp_path / "kept.jsonl"
    done = consent_filter("--time-column", "ts", "--batch-rows", "3", str(src), str(dst))
    assert done.exit_code == 0, done.output
    records = [line for line in src.read_text().splitlines() if line]
    allowed = [*KEPT, US[2]]
    assert dst.read_text().splitlines() == [
        r for r in records if json.loads(r)["user_id"] in allowed
    ]
    assert json.loads(Path(f"{dst}.manifest.json").read_text())["rows_without_time"] == 3


def test_a_parquet_filter_takes_a_timestamp_column_in_any_zone_and_unit(
    fake: FakePipeline, tmp_path: Path
) -> None:
    zone = timezone(timedelta(hours=-5))
    times = [None if t is None else datetime.fromisoformat(t).astimezone(zone) for _, t, _ in ROWS]
    src = write_parquet(
        tmp_path / "posts.parquet",
        [u for u, _, _ in ROWS],
        pa.array(times, pa.timestamp("us", "-05:00")),
    )
    dst = tmp_path / "kept.parquet"
    done = consent_filter("--time-column", "ts", "--batch-rows", "3", str(src), str(dst))
    assert done.exit_code == 0, done.output
    assert pq.read_table(dst).column("user_id").to_pylist() == KEPT
    assert pq.read_table(dst).equals(pq.read_table(src).filter(pa.array([r[2] for r in ROWS])))
    assert len(fake.sent) == 3  # one request per batch of 3 rows: streamed as read


def test_a_parquet_filter_takes_rfc_3339_text_times(fake: FakePipeline, tmp_path: Path) -> None:
    src = write_parquet(
        tmp_path / "posts.parquet", [u for u, _, _ in ROWS], pa.array([t for _, t, _ in ROWS])
    )
    dst = tmp_path / "kept.parquet"
    assert consent_filter("--time-column", "ts", str(src), str(dst)).exit_code == 0
    assert pq.read_table(dst).column("user_id").to_pylist() == KEPT


def test_a_time_column_combines_with_a_run_whose_members_are_the_kept_ids(
    fake: FakePipeline, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "posts.csv", [(u, t) for u, t, _ in ROWS])
    dst = tmp_path / "kept.csv"
    done = consent_filter("--time-column", "ts", "--run", "llm-1", str(src), str(dst))
    assert done.exit_code == 0, done.output
    assert sorted(fake.members) == sorted(KEPT)
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    assert (manifest["time_column"], manifest["run"]["name"]) == ("ts", "llm-1")


# ------------------------------------------------------------ refused: exit 3, nothing written


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_missing_time_column_is_exit_3_and_sends_and_writes_nothing(
    fake: FakePipeline, tmp_path: Path, fmt: str
) -> None:
    src = {
        "csv": lambda p: write_csv(p, [(US[0], INSIDE)], time_name="when"),
        "parquet": lambda p: write_parquet(p, [US[0]], pa.array([INSIDE])),
        "jsonl": lambda p: write_jsonl(p, [(US[0], None), (US[1], None)]),
    }[fmt](tmp_path / f"posts.{fmt}")
    done = consent_filter("--time-column", "processed_at", str(src), str(tmp_path / f"out.{fmt}"))
    assert done.exit_code == 3
    what = "no line has a field" if fmt == "jsonl" else "no column"
    assert f"{what} 'processed_at'" in done.stderr
    assert names(tmp_path) == [src.name]
    if fmt != "jsonl":  # a JSON Lines file has no header: its lines are read (and sent) first
        assert fake.sent == []


def test_naive_parquet_timestamps_are_exit_3_unless_assumed_utc(
    fake: FakePipeline, tmp_path: Path
) -> None:
    naive = [datetime(2024, 7, 1, 12), datetime(2024, 10, 1)]
    src = write_parquet(
        tmp_path / "posts.parquet", [EEA[0], EEA[1]], pa.array(naive, pa.timestamp("ms"))
    )
    dst = tmp_path / "kept.parquet"
    refused = consent_filter("--time-column", "ts", str(src), str(dst))
    assert refused.exit_code == 3
    assert "timestamp[ms], without a time zone" in refused.stderr
    assert "--assume-utc" in refused.stderr
    assert names(tmp_path) == ["posts.parquet"]
    assert fake.sent == []
    done = consent_filter("--time-column", "ts", "--assume-utc", str(src), str(dst))
    assert done.exit_code == 0, done.output
    assert pq.read_table(dst).column("user_id").to_pylist() == [EEA[1]]
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    assert manifest["assume_utc"] is True
    sent = fake.sent[0].body[0].column(1).to_pylist()
    assert sent == [datetime(2024, 7, 1, 12, tzinfo=UTC), datetime(2024, 10, 1, tzinfo=UTC)]


def test_a_time_column_of_another_type_is_exit_3(fake: FakePipeline, tmp_path: Path) -> None:
    src = write_parquet(tmp_path / "posts.parquet", [US[0]], pa.array([1_719_835_200]))
    done = consent_filter("--time-column", "ts", str(src), str(tmp_path / "out.parquet"))
    assert done.exit_code == 3
    assert "time column 'ts': the times are Arrow int64" in done.stderr


WriteBad = Callable[[Path, str], Path]


@pytest.mark.parametrize(
    ("fmt", "write", "where"),
    [
        (
            "csv",
            lambda p, bad: write_csv(p, [(US[0], INSIDE), (US[1], None), (US[2], bad)]),
            "row 3",
        ),
        (
            "jsonl",
            lambda p, bad: write_jsonl(p, [(US[0], INSIDE), (US[1], None), (US[2], bad)]),
            "line 4",
        ),  # fmt: skip  (a blank line is line 2)
        (
            "parquet",
            lambda p, bad: write_parquet(p, US[:5], pa.array([None, INSIDE, OUTSIDE, None, bad])),
            "row 5",
        ),  # fmt: skip  (in the second batch of 3 rows)
    ],
)
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("2024-07-01 12:00:00", "has no offset; add one (Z for UTC) (or pass --assume-utc"),
        ("1 July 2024", "is not an RFC 3339 time"),
        ("2024-02-30T00:00:00Z", "is no such date or time"),
    ],
)
def test_a_bad_time_is_exit_3_naming_its_row_and_writes_nothing(
    fake: FakePipeline, tmp_path: Path, fmt: str, write: WriteBad, where: str, bad: str, reason: str
) -> None:
    src = write(tmp_path / f"posts.{fmt}", bad)
    done = consent_filter(
        "--time-column", "ts", "--batch-rows", "3", str(src), str(tmp_path / f"out.{fmt}")
    )
    assert done.exit_code == 3, done.output
    assert f"posts.{fmt}: {where}: time column 'ts': {bad!r} {reason}" in done.stderr
    assert names(tmp_path) == [src.name]


def test_a_json_lines_time_that_is_no_string_is_exit_3_naming_its_line(
    fake: FakePipeline, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "posts.jsonl", [(US[0], 1_719_835_200)])
    done = consent_filter("--time-column", "ts", str(src), str(tmp_path / "out.jsonl"))
    assert done.exit_code == 3
    assert "line 1: time column 'ts': 1719835200 is no time" in done.stderr


def test_assume_utc_without_a_time_column_and_a_time_column_that_is_the_id_are_refused(
    fake: FakePipeline, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "posts.csv", [(US[0], INSIDE)])
    usage = consent_filter("--assume-utc", str(src), str(tmp_path / "out.csv"))
    assert usage.exit_code == 2
    assert "--assume-utc reads the times of a --time-column" in usage.stderr
    same = consent_filter("--time-column", "user_id", str(src), str(tmp_path / "out.csv"))
    assert same.exit_code == 3
    assert names(tmp_path) == ["posts.csv"]


def test_the_help_says_a_row_without_a_time_is_denied_by_a_windowed_restriction() -> None:
    shown = CliRunner().invoke(cli.cli, ["filter", "--help"]).output
    assert "--time-column" in shown
    assert "windowed restriction denies it" in " ".join(shown.split())
    assert "--assume-utc" in shown


def test_csv_times_written_by_arrow_read_back_as_the_same_instants(
    fake: FakePipeline, tmp_path: Path
) -> None:
    # A CSV written by Arrow from a timestamp column ("2024-07-01 12:00:00.000000Z"): readable.
    when = pa.array([datetime(2024, 7, 1, 12, tzinfo=UTC), None], pa.timestamp("us", "UTC"))
    src = tmp_path / "posts.csv"
    pcsv.write_csv(pa.table({"user_id": [EEA[0], EEA[1]], "ts": when}), src)
    done = consent_filter("--time-column", "ts", str(src), str(tmp_path / "out.csv"))
    assert done.exit_code == 0, done.output
    assert fake.sent[0].body[0].column(1).to_pylist() == when.to_pylist()
