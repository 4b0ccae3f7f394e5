"""A running server's workers see an imported population: `consent import` writes it while
gunicorn serves, each worker rebuilds its index past the lag threshold, and /metrics says so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from tests.live import live_server

# Two events each, well past one fetch of the follower (FETCH events): the lag is asked again
# after the first fetch, so every worker rebuilds, even one whose poll began just before the
# import committed and so fetched its first chunk event by event.
SUBJECTS = 12_000
WAIT_SECONDS = 60.0


def test_every_worker_answers_an_imported_population_after_rebuilding_its_index(
    tmp_path: Path,
) -> None:
    with live_server(
        tmp_path, CONSENT_INDEX_REBUILD_LAG="500", CONSENT_INDEX_POLL_SECONDS="0.05"
    ) as live:
        admin = {"Authorization": f"Bearer {live.tokens['admin']}"}
        pipeline = {"Authorization": f"Bearer {live.tokens['pipeline']}"}
        purpose = {
            "key": "model_training",
            "title": "Model training",
            "defaults": {"EEA": "denied", "*": "granted"},
            "unknown_subject": "denied",
        }
        with httpx.Client(base_url=live.base_url, timeout=30) as http:
            assert http.post("/v1/purposes", json=purpose, headers=admin).status_code == 201
            ids = [str(7_000_000 + i) for i in range(SUBJECTS)]
            # Every worker answers before the import: each has built its index already.
            for _ in range(8):
                asked = httpx.get(
                    f"{live.base_url}/v1/lookup/model_training/{ids[0]}", headers=pipeline
                )
                assert asked.json()["basis"] == "unknown"
        path = tmp_path / "users.parquet"
        pq.write_table(
            pa.table(
                {
                    "user_id": pa.array([int(i) for i in ids], pa.int64()),
                    "jurisdiction": pa.array(["US"] * SUBJECTS),
                    "choice:model_training": pa.array(["denied"] * SUBJECTS),
                }
            ),
            path,
        )
        done = subprocess.run(
            [str(Path(sys.executable).parent / "consent"), "import", str(path)],
            env={**os.environ, "CONSENT_DATABASE_URL": live.database_url},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert f"Imported {SUBJECTS:,} subjects" in done.stdout
        imported_head = int(re.findall(r"ledger head ([0-9]+)", done.stdout)[0])

        # Ask with a fresh connection each time (gunicorn hands each to any worker) until a
        # run of answers all show the imported state from an index at or past the import.
        deadline = time.monotonic() + WAIT_SECONDS
        streak = 0
        while streak < 12 and time.monotonic() < deadline:
            body = {"user_ids": [ids[0], ids[-1], "never-seen"]}
            got = httpx.post(
                f"{live.base_url}/v1/lookup/model_training", json=body, headers=pipeline
            ).json()
            ok = got["as_of"] >= imported_head and sorted(got["denied"]) == sorted(body["user_ids"])
            streak = streak + 1 if ok else 0
            time.sleep(0.05)
        assert streak >= 12, got
        metrics = httpx.get(f"{live.base_url}/metrics").text
        rebuilt = re.search(r"^consent_index_rebuilds_total ([0-9.e+]+)$", metrics, re.MULTILINE)
        assert rebuilt is not None, metrics[-2000:]
        assert float(rebuilt.group(1)) >= 2  # both workers
        assert re.search(r"index rebuilt: lag [0-9]+ events, took", live.log())
        lag = re.search(r"^consent_index_lag_events ([0-9.e+]+)$", metrics, re.MULTILINE)
        assert lag is not None
        assert float(lag.group(1)) == 0
