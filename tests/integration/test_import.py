"""`consent import` against a real database (SQLite, or PostgreSQL through COPY): the events it
writes are those the API writes for the same users, batches are all or nothing, reruns go on
from the progress file and never register anyone twice, even after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask

from service import create_app
from service.ledger import import_source, imports
from service.ledger.import_progress import default_path
from service.runtime.cli import cli
from service.runtime.extensions import db
from tests.api.test_read_path_properties import Replay
from tests.conftest import app_config
from tests.factories import Api
from tests.live import own_database

PURPOSES = {
    "model_training": {"defaults": {"EEA": "denied", "*": "granted"}, "unknown_subject": "denied"},
    "ads_personalisation": {
        "defaults": {"*": "denied", "US": "granted"},
        "unknown_subject": "granted",
        "legal_bases": {"BR": "not_offered"},
    },
}
HEADER = ["user_id", "jurisdiction", "choice:model_training", "choice:ads_personalisation"]
ROWS = [
    ["u1", "DE", "granted", ""],
    ["u2", "us", "", "denied"],
    ["u3", "", "denied", "granted"],
    ["u4", "BR", "granted", "granted"],
    ["u5", " no ", "", ""],
    ["42", "FR", "denied", ""],
    ["x:y@z.-_", "JP", "", "granted"],
]
# What a consumer reads of an event besides who wrote it (the API's app key, or the import).
CONSUMED = ("seq", "kind", "user_id", "purpose", "before", "after", "data")
CONSENT_SCRIPT = Path(sys.executable).parent / "consent"


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def arrange(api: Api) -> int:
    """The purposes and an order restricting model training in the US; the head after them."""
    for key, body in PURPOSES.items():
        api.purpose(key=key, **body)  # type: ignore[arg-type]
    order = {
        "authority": "A regulator",
        "instrument": "Order 1",
        "purposes": ["model_training"],
        "jurisdictions": ["US"],
        "reason": "Ordered",
        "ticket": "LEG-1",
    }
    resp = api.call("POST", "/v1/restrictions", json=order)
    assert resp.status_code == 201, resp.get_json()
    return head(api.app)


def head(app: Flask) -> int:
    with app.app_context():
        seq = int(db.session.execute(sa.text("SELECT seq FROM ledger_head")).scalar_one())
        db.session.rollback()
    return seq


def table(app: Flask, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with app.app_context():
        rows = [tuple(r) for r in db.session.execute(sa.text(sql), params)]
        db.session.rollback()
    return rows


def events_after(app: Flask, seq: int) -> list[dict[str, Any]]:
    """The events after seq as the feed would carry them, data parsed (SQLite keeps it text)."""
    with app.app_context():
        rows = db.session.execute(
            sa.text(
                f"SELECT {', '.join(CONSUMED)}, actor, role FROM events WHERE seq > :s ORDER BY seq"
            ),
            {"s": seq},
        ).mappings()
        out = [
            {**r, "data": json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]}
            for r in rows
        ]
        db.session.rollback()
    return out


def run_import(app: Flask, path: Path, **options: Any) -> imports.ImportSummary:
    with app.app_context():
        summary = imports.import_file(
            import_source.Source.open(path),
            options.pop("progress", default_path(path)),
            options.pop("actor", "import:test"),
            **options,
        )
        db.engine.dispose()
    return summary


@pytest.fixture
def second(tmp_path: Path) -> Iterator[tuple[Flask, Api]]:
    """A second, fresh database and an app on it (the test database being the first)."""
    with own_database(tmp_path / "second") as url:
        app = create_app(app_config(url))
        try:
            yield app, Api(app, app.test_client())
        finally:
            with app.app_context():
                db.engine.dispose()


@pytest.fixture
def run_cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`consent …` on this test's database, as an operator runs it."""
    monkeypatch.setenv("CONSENT_DATABASE_URL", database_url)
    monkeypatch.setenv("CONSENT_EXPIRY_SWEEP_SECONDS", "0")
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), catch_exceptions=False)


def test_imported_events_and_rows_equal_what_the_api_writes_for_the_same_users(
    api: Api, second: tuple[Flask, Api], tmp_path: Path
) -> None:
    start = arrange(api)
    reference_app, reference = second
    assert arrange(reference) == start
    for user_id, jurisdiction, *choices in ROWS:
        reference.user(user_id, jurisdiction=jurisdiction or None)
        for purpose, state in sorted(zip(HEADER[2:], choices, strict=True)):
            if state:
                resp = reference.call(
                    "PUT",
                    f"/v1/users/{user_id}/consents/{purpose.removeprefix('choice:')}",
                    role="app",
                    json={"state": state, "source": "import"},
                )
                assert resp.status_code == 200, resp.get_json()

    summary = run_import(api.app, write_csv(tmp_path / "users.csv", ROWS))

    imported, expected = events_after(api.app, start), events_after(reference_app, start)
    assert [{k: e[k] for k in CONSUMED} for e in imported] == [
        {k: e[k] for k in CONSUMED} for e in expected
    ]
    assert {(e["actor"], e["role"]) for e in imported} == {("import:test", "admin")}
    assert (summary.totals.imported, summary.totals.skipped) == (len(ROWS), 0)
    assert summary.totals.events == len(expected)
    assert summary.head == head(api.app) == head(reference_app)
    for sql in (
        "SELECT user_id, jurisdiction, erased, registered_seq, updated_seq FROM subjects "
        "ORDER BY user_id",
        "SELECT user_id, purpose, state, source, version, updated_seq, notice_version "
        "FROM choices ORDER BY user_id, purpose",
    ):
        assert table(api.app, sql) == table(reference_app, sql)
    for user_id, *_ in ROWS:
        path = f"/v1/users/{user_id}"
        assert api.call("GET", path, role="support").get_json() == (
            reference.call("GET", path, role="support").get_json()
        )


def test_every_imported_event_replays_to_the_state_reads_answer(api: Api, tmp_path: Path) -> None:
    api.purpose()
    rows = [[f"r{i}", ("DE", "US", "", "NO")[i % 4], ("granted", "denied", "")[i % 3]]
            for i in range(40)]  # fmt: skip
    run_import(api.app, write_csv(tmp_path / "one.csv", rows, HEADER[:3]))
    feed = api.call("GET", "/v1/audit?after=0&limit=1000", role="admin").get_json()["events"]
    replay = Replay(feed)  # checks each event's before and after against its own model
    final, at = replay.state(feed[-1]["seq"])
    for user_id, *_ in rows:
        got = api.call("GET", f"/v1/lookup/model_training/{user_id}", role="pipeline").get_json()
        assert (got["state"], got["basis"]) == final.effective(user_id, at), user_id


def test_history_and_as_of_reads_see_the_import_as_the_events_it_wrote(
    api: Api, tmp_path: Path
) -> None:
    api.purpose()
    before = head(api.app)
    run_import(api.app, write_csv(tmp_path / "u.csv", [["ann", "US", "denied"]], HEADER[:3]))
    history = api.events("ann")
    assert [(e["kind"], e["before"], e["after"], e["actor"], e["role"]) for e in history] == [
        ("subject_registered", "denied", "granted", "import:test", "admin"),
        ("choice_set", "granted", "denied", "import:test", "admin"),
    ]

    def lookup(as_of: Any) -> tuple[str, str]:
        got = api.call(
            "GET", f"/v1/lookup/model_training/ann?as_of={as_of}", role="pipeline"
        ).get_json()
        return got["state"], got["basis"]

    assert lookup(before) == ("denied", "unknown")
    assert lookup(before + 1) == ("granted", "default")
    assert lookup(before + 2) == ("denied", "choice")
    assert lookup(history[-1]["at"]) == ("denied", "choice")
    changes = api.call("GET", f"/v1/changes?after={before}", role="pipeline").get_json()
    assert [e["seq"] for e in changes["events"]] == [before + 1, before + 2]


def test_a_parquet_file_with_numeric_ids_imports_what_the_same_csv_does(
    api: Api, second: tuple[Flask, Api], tmp_path: Path
) -> None:
    ids = list(range(5000, 5060))
    states = [("granted", "denied", None)[i % 3] for i in range(len(ids))]
    jurisdictions = [("DE", "us", None, "BR")[i % 4] for i in range(len(ids))]
    parquet = tmp_path / "users.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(ids, pa.int64()),
                "jurisdiction": pa.array(jurisdictions).dictionary_encode(),
                "choice:model_training": pa.array(states, pa.large_string()),
            }
        ),
        parquet,
        row_group_size=17,
    )
    csv_rows = [
        [str(i), j or "", s or ""] for i, j, s in zip(ids, jurisdictions, states, strict=True)
    ]
    other_app, other = second
    api.purpose()
    other.purpose()
    start = head(api.app)
    run_import(api.app, write_csv(tmp_path / "users.csv", csv_rows, HEADER[:3]), batch_size=25)
    run_import(other_app, parquet, batch_size=25)
    assert [{k: e[k] for k in CONSUMED} for e in events_after(api.app, start)] == [
        {k: e[k] for k in CONSUMED} for e in events_after(other_app, start)
    ]


def test_subjects_the_ledger_has_are_skipped_and_counted_never_registered_twice(
    api: Api, run_cli: Any, tmp_path: Path
) -> None:
    api.purpose()
    api.user("u2", jurisdiction="DE")
    api.choose("u2", "granted")
    kept = api.events("u2")
    rows = [[user_id, jurisdiction, choice] for user_id, jurisdiction, choice, _ in ROWS[:4]]
    rows.append(["u1", "FR", "denied"])  # a second row for u1: its first row wins
    result = run_cli("import", str(write_csv(tmp_path / "in.csv", rows, HEADER[:3])))
    assert result.exit_code == 0, result.output
    assert "Imported 3 subjects (2 skipped" in result.stdout
    assert api.events("u2") == kept
    assert table(api.app, "SELECT jurisdiction FROM subjects WHERE user_id = 'u2'") == [("DE",)]
    assert table(api.app, "SELECT state FROM choices WHERE user_id = 'u1'") == [("granted",)]
    again = run_cli("import", str(tmp_path / "in.csv"), "--progress", str(tmp_path / "new.json"))
    assert "Imported 0 subjects (5 skipped" in again.stdout
    registered = table(
        api.app,
        "SELECT user_id, count(*) FROM events WHERE kind = 'subject_registered' GROUP BY user_id",
    )
    assert sorted(registered) == [("u1", 1), ("u2", 1), ("u3", 1), ("u4", 1)]


def test_a_malformed_row_stops_its_batch_unwritten_and_keeps_the_batches_before(
    api: Api, run_cli: Any, tmp_path: Path
) -> None:
    api.purpose()
    rows = [[f"m{i}", "DE", "granted"] for i in range(9)]
    rows[6][1] = "Germany"
    path = write_csv(tmp_path / "bad.csv", rows, HEADER[:3])
    result = run_cli("import", str(path), "--batch-size", "3")
    assert result.exit_code == 2
    assert "error: row 7: 'Germany' is not an ISO 3166-1 alpha-2 country code." in result.stderr
    assert "Nothing of the batch holding row 7 was written" in result.stderr
    imported = table(api.app, "SELECT user_id FROM subjects ORDER BY user_id")
    assert imported == [(f"m{i}",) for i in range(6)]  # batches 1 and 2; nothing of batch 3
    assert table(api.app, "SELECT count(*) FROM events WHERE user_id = 'm6'") == [(0,)]
    progress = json.loads(default_path(path).read_text())
    assert (progress["rows_committed"], progress["complete"]) == (6, False)


def test_a_csv_row_with_the_wrong_number_of_fields_is_named(
    api: Api, run_cli: Any, tmp_path: Path
) -> None:
    api.purpose()
    path = tmp_path / "short.csv"
    path.write_text("user_id,jurisdiction\na,DE\nb,FR\nc\nd,FR\n")
    result = run_cli("import", str(path))
    assert result.exit_code == 2
    assert "row 3: expected 2 fields, found 1: 'c'" in result.stderr
    assert "Nothing was imported." in result.stderr
    assert table(api.app, "SELECT count(*) FROM subjects") == [(0,)]
    # In batches of two, the first batch is before the bad row: it is imported.
    again = run_cli("import", str(path), "--batch-size", "2")
    assert "Nothing of the batch holding row 3 was written" in again.stderr
    assert table(api.app, "SELECT user_id FROM subjects ORDER BY user_id") == [("a",), ("b",)]


def test_a_rerun_goes_on_after_the_rows_the_progress_file_says_are_committed(
    api: Api, tmp_path: Path
) -> None:
    api.purpose()
    rows = [[f"p{i}", "US", ""] for i in range(10)]
    path = write_csv(tmp_path / "p.csv", rows, HEADER[:3])
    progress = default_path(path)
    progress.write_text(
        json.dumps({"input": str(path), **_digest(path), "rows_committed": 4, "complete": False})
    )
    summary = run_import(api.app, path, batch_size=4)
    assert (summary.resumed_after, summary.totals.rows, summary.totals.imported) == (4, 6, 6)
    assert table(api.app, "SELECT min(user_id), count(*) FROM subjects") == [("p4", 6)]
    done = json.loads(progress.read_text())
    assert (done["rows_committed"], done["complete"], done["totals"]["imported"]) == (10, True, 6)
    assert run_import(api.app, path).totals.rows == 0


def _digest(path: Path) -> dict[str, Any]:
    d = import_source.Digest.of(path)
    return {"sha256": d.sha256, "size": d.size}


def test_a_progress_file_of_another_input_is_refused_before_anything_is_written(
    api: Api, run_cli: Any, tmp_path: Path
) -> None:
    api.purpose()
    first = write_csv(tmp_path / "a.csv", [["a1", "DE", ""]], HEADER[:3])
    other = write_csv(tmp_path / "b.csv", [["b1", "DE", ""]], HEADER[:3])
    assert run_cli("import", str(first), "--progress", str(tmp_path / "p.json")).exit_code == 0
    refused = run_cli("import", str(other), "--progress", str(tmp_path / "p.json"))
    assert refused.exit_code == 2
    assert "is for another input" in refused.stderr
    assert table(api.app, "SELECT user_id FROM subjects") == [("a1",)]


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (["user_id", "choice:model_training"], "jurisdiction"),
        (["user_id", "jurisdiction", "choice:nope"], "choice:nope"),
        (["user_id", "jurisdiction", "email"], "email"),
    ],
)
def test_a_wrong_header_is_refused_naming_the_column(
    api: Api, run_cli: Any, tmp_path: Path, header: list[str], named: str
) -> None:
    api.purpose()
    path = write_csv(tmp_path / "h.csv", [["a"] * len(header)], header)
    result = run_cli("import", str(path))
    assert result.exit_code == 2
    assert f"{named}:" in result.stderr
    assert table(api.app, "SELECT count(*) FROM subjects") == [(0,)]


def test_a_parquet_column_that_is_not_text_is_refused(
    api: Api, run_cli: Any, tmp_path: Path
) -> None:
    api.purpose()
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"user_id": ["a"], "jurisdiction": [1.5]}), path)
    result = run_cli("import", str(path))
    assert result.exit_code == 2
    assert "jurisdiction: Must be a text column, not double." in result.stderr


def _subjects_and_events(app: Flask) -> tuple[list[Any], list[Any], list[Any]]:
    return (
        table(app, "SELECT user_id, jurisdiction, registered_seq FROM subjects ORDER BY user_id"),
        table(app, "SELECT user_id, purpose, state, updated_seq FROM choices ORDER BY user_id"),
        table(
            app,
            "SELECT seq, kind, user_id, purpose, before, after FROM events ORDER BY seq",
        ),
    )


def test_an_import_killed_half_way_and_rerun_equals_an_uninterrupted_one(
    api: Api, second: tuple[Flask, Api], database_url: str, tmp_path: Path
) -> None:
    total, batch = 60_000, 2_000
    path = tmp_path / "many.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([f"k{i:06d}" for i in range(total)]),
                "jurisdiction": pa.array([("DE", "US", "BR")[i % 3] for i in range(total)]),
                "choice:model_training": pa.array(
                    [("granted", "denied", "")[i % 3] for i in range(total)]
                ),
            }
        ),
        path,
    )
    other_app, other = second
    api.purpose()
    other.purpose()
    progress = default_path(path)
    command = [str(CONSENT_SCRIPT), "import", str(path), "--batch-size", str(batch)]
    env = {**os.environ, "CONSENT_DATABASE_URL": database_url, "CONSENT_EXPIRY_SWEEP_SECONDS": "0"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["rows_committed"] >= batch:
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    killed_at = json.loads(progress.read_text())
    assert not killed_at["complete"], "the import ended before it could be killed"
    assert batch <= killed_at["rows_committed"] < total

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(progress.read_text())["complete"]
    other_url = other_app.config["SQLALCHEMY_DATABASE_URI"]
    uninterrupted = subprocess.run(
        [*command, "--progress", str(tmp_path / "other.json")],
        env={**env, "CONSENT_DATABASE_URL": other_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    registered = table(
        api.app,
        "SELECT count(*), count(DISTINCT user_id) FROM events WHERE kind = 'subject_registered'",
    )
    assert registered == [(total, total)]
    assert _subjects_and_events(api.app) == _subjects_and_events(other_app)


def test_an_import_leaves_the_planners_statistics_of_the_tables_it_grew(
    api: Api, tmp_path: Path
) -> None:
    api.purpose()
    postgres = api.app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    began = table(api.app, "SELECT now()")[0][0] if postgres else None
    rows = [[f"s{i}", "DE", "granted"] for i in range(30)]
    run_import(api.app, write_csv(tmp_path / "s.csv", rows, HEADER[:3]), batch_size=10)
    if postgres:
        analysed = table(
            api.app,
            "SELECT relname, last_analyze >= :began FROM pg_stat_user_tables "
            "WHERE relname IN ('subjects', 'choices', 'events') ORDER BY relname",
            began=began,
        )
        assert analysed == [("choices", True), ("events", True), ("subjects", True)]
    else:
        analysed = table(
            api.app,
            "SELECT DISTINCT tbl FROM sqlite_stat1 "
            "WHERE tbl IN ('subjects', 'choices', 'events') ORDER BY tbl",
        )
        assert analysed == [("choices",), ("events",), ("subjects",)]
