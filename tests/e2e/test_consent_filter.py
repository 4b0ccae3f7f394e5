"""`consent filter` and `consent snapshot` as a pipeline author runs them, against a real server.

Each file format, the manifest, exit codes, nothing written on failure, and the README's DuckDB
and Spark recipes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import ALLOWED, DE, PURPOSE, US
from tests.http_faults import Fault, FaultProxy
from tests.live import LiveServer

CONSENT = Path(sys.executable).parent / "consent"
ROWS = US + DE + ["alice", "bob", "never-seen"]


def consent(
    live: LiveServer | str, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the consent command as a user would, with the key in CONSENT_API_KEY."""
    url = live if isinstance(live, str) else live.base_url
    token = (
        key if key is not None else (live.tokens["pipeline"] if not isinstance(live, str) else "")
    )
    env = {**os.environ, "CONSENT_URL": url, "CONSENT_API_KEY": token}
    return subprocess.run(
        [str(CONSENT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def dataset(directory: Path, fmt: str) -> Path:
    """A small dataset with a user-ID column and a payload column."""
    rows = {"user_id": ROWS, "text": [f"post by {u}" for u in ROWS]}
    if fmt == "parquet":
        path = directory / "posts.parquet"
        pq.write_table(pa.table(rows), path)
    elif fmt == "csv":
        path = directory / "posts.csv"
        pcsv.write_csv(pa.table(rows), path)
    else:
        path = directory / "posts.jsonl"
        path.write_text(
            "".join(
                json.dumps({"user_id": u, "text": t}) + "\n"
                for u, t in zip(*rows.values(), strict=True)
            )
        )
    return path


def kept_ids(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return [str(u) for u in pq.read_table(path).column("user_id").to_pylist()]
    if path.suffix == ".csv":
        table = pcsv.read_csv(
            path, convert_options=pcsv.ConvertOptions(column_types={"user_id": pa.string()})
        )
        return [str(u) for u in table.column("user_id").to_pylist()]
    return [str(json.loads(line)["user_id"]) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_consent_filter_keeps_exactly_the_allowed_rows_and_writes_a_manifest(
    server: LiveServer, tmp_path: Path, fmt: str
) -> None:
    src = dataset(tmp_path, fmt)
    dst = tmp_path / f"kept{src.suffix}"
    done = consent(
        server, "filter", "--purpose", PURPOSE, "--column", "user_id", str(src), str(dst)
    )
    assert done.returncode == 0, done.stderr
    assert kept_ids(dst) == [u for u in ROWS if u in set(ALLOWED)]
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    assert manifest["purpose"] == PURPOSE
    assert manifest["service_url"] == server.base_url
    assert manifest["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert manifest["output"]["sha256"] == hashlib.sha256(dst.read_bytes()).hexdigest()
    assert (manifest["input"]["rows"], manifest["kept"]) == (len(ROWS), len(ALLOWED))
    assert manifest["dropped"] == len(ROWS) - len(ALLOWED)
    assert f"as_of {manifest['as_of']}" in done.stderr
    assert "kept" in done.stderr


def test_the_manifest_as_of_reproduces_the_answer_later(server: LiveServer, tmp_path: Path) -> None:
    src = dataset(tmp_path, "parquet")
    first, again = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   str(src), str(first)).returncode == 0  # fmt: skip
    as_of = json.loads(Path(f"{first}.manifest.json").read_text())["as_of"]
    done = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   "--as-of", str(as_of), str(src), str(again))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert again.read_bytes() == first.read_bytes()


def test_a_missing_column_or_an_unreadable_file_is_exit_3_and_writes_nothing(
    server: LiveServer, tmp_path: Path
) -> None:
    src = dataset(tmp_path, "parquet")
    missing = consent(server, "filter", "--purpose", PURPOSE, "--column", "uid",
                      str(src), str(tmp_path / "out.parquet"))  # fmt: skip
    assert missing.returncode == 3
    assert "no column 'uid'" in missing.stderr
    garbage = tmp_path / "broken.parquet"
    garbage.write_bytes(b"not parquet at all")
    unreadable = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                         str(garbage), str(tmp_path / "out2.parquet"))  # fmt: skip
    assert unreadable.returncode == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "posts.parquet"]


def test_a_refusing_or_unreachable_service_is_exit_4_or_5_and_writes_nothing(
    server: LiveServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    src = dataset(tmp_path, "csv")
    out = tmp_path / "out.csv"
    refused = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                      str(src), str(out), key="wrong-key")  # fmt: skip
    assert refused.returncode == 4
    assert "401" in refused.stderr
    proxy.reset()
    proxy.always = Fault(status=503)
    down = consent(proxy.url, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   str(src), str(out), key=server.tokens["pipeline"])  # fmt: skip
    proxy.reset()
    assert down.returncode == 5
    assert "nothing was written" in down.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.csv"]


def snapshots(live: LiveServer, directory: Path) -> tuple[Path, Path]:
    """The denied and allowed snapshots, as the README's recipes take them (one as_of)."""
    denied, allowed = directory / "denied.parquet", directory / "allowed.parquet"
    as_of: list[str] = []
    for which, path in (("denied", denied), ("allowed", allowed)):
        done = consent(live, "snapshot", "--purpose", PURPOSE, "--set", which, *as_of, str(path))
        assert done.returncode == 0, done.stderr
        as_of = ["--as-of", done.stderr.rsplit("as_of ", 1)[1].strip()]
    return denied, allowed


def duckdb_recipe(posts: Path, denied: Path, allowed: Path) -> list[tuple[str, str]]:
    """The README's DuckDB recipe: the anti-join, and only IDs the ledger positively allows."""
    rows = query(
        f"""
        SELECT posts.* FROM read_parquet('{posts}') AS posts
        ANTI JOIN read_parquet('{denied}') AS denied ON posts.user_id = denied.user_id
        SEMI JOIN read_parquet('{allowed}') AS allowed ON posts.user_id = allowed.user_id
        """
    )
    return sorted(rows)


def query(sql: str) -> list[Any]:
    """Every row of a DuckDB query (a SELECT always yields a relation)."""
    relation = duckdb.sql(sql)
    assert relation is not None
    return relation.fetchall()


def test_the_readme_duckdb_recipe_drops_the_same_rows_as_consent_filter(
    server: LiveServer, tmp_path: Path
) -> None:
    src = dataset(tmp_path, "parquet")
    denied, allowed = snapshots(server, tmp_path)
    # The anti-join alone keeps IDs the ledger has never seen: they are in neither snapshot.
    anti = query(
        f"SELECT posts.user_id FROM read_parquet('{src}') AS posts "
        f"ANTI JOIN read_parquet('{denied}') AS denied ON posts.user_id = denied.user_id"
    )
    assert sorted(u for (u,) in anti) == sorted([*ALLOWED, "never-seen"])
    kept = duckdb_recipe(src, denied, allowed)
    assert [u for u, _ in kept] == sorted(ALLOWED)


def readme_spark_recipe() -> str:
    """The README's Spark recipe, as written there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme.split("The same join in **Spark**", 1)[1]
    recipe = after.split("```python\n", 1)[1].split("```", 1)[0]
    assert "s3://bucket/" in recipe
    assert "left_anti" in recipe
    return recipe


# What a Spark shell or notebook provides before the recipe: a session (here on this machine
# alone, one core, no UI), and after it, its end.
SPARK_SESSION = """
from pyspark.sql import SparkSession

spark = (
    SparkSession.builder.master("local[1]")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.ui.enabled", "false")
    .config("spark.ui.showConsoleProgress", "false")
    .config("spark.sql.shuffle.partitions", "1")
    .getOrCreate()
)
"""


@pytest.mark.skipif(
    shutil.which("java") is None, reason="Spark needs Java (Debian: openjdk-17-jre-headless)"
)
def test_the_readme_spark_recipe_keeps_the_same_rows_as_the_duckdb_recipe(
    server: LiveServer, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    (bucket / "posts").mkdir(parents=True)
    src = dataset(bucket / "posts", "parquet")
    denied, allowed = snapshots(server, tmp_path)
    # The recipe as the README has it, run where the snapshots are, the bucket a local folder.
    recipe = readme_spark_recipe().replace("s3://bucket/", f"{bucket}/")
    script = tmp_path / "recipe.py"
    script.write_text(f"{SPARK_SESSION}\n{recipe}\nspark.stop()\n")
    # Its own process: the JVM it starts ends with it. That JVM lives seconds on a small
    # machine, so it compiles less and collects on one thread (a third faster here).
    jvm = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_SUBMIT_ARGS": f'--driver-java-options "{jvm}" pyspark-shell',
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kept = pq.read_table(bucket / "posts-kept").select(["user_id", "text"])
    rows = sorted(zip(*kept.to_pydict().values(), strict=True))
    assert rows == duckdb_recipe(src, denied, allowed)
    assert [u for u, _ in rows] == sorted(ALLOWED)
