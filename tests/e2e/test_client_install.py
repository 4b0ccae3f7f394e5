"""The client as a pipeline installs it: alone, in a fresh venv, and working against a live server.

`pip install ./clients/python` gives `consent_client` and `consent-client` without the server,
and that filter keeps the allowed rows. (That the server's wheel carries consent_client too is
checked in test_install.py.) Dependencies come from the package registry once, at the lock's
versions, into a wheelhouse in pytest's cache; every install after that is offline from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ON_POSTGRES
from tests.e2e.conftest import ALLOWED, PURPOSE
from tests.e2e.test_consent_filter import ROWS, dataset, kept_ids
from tests.e2e.test_install import pinned_versions
from tests.live import LiveServer

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "clients" / "python"
SERVER_ONLY = {"flask", "flask-smorest", "flask-sqlalchemy", "sqlalchemy", "alembic", "gunicorn"}

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(
        ON_POSTGRES, reason="installing does not depend on the database; checked on the SQLite run"
    ),
]


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pip with `python`, its output captured."""
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def requirements(project: Path) -> list[str]:
    """A project's build backend and runtime dependencies, from its pyproject.toml."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())
    return [*meta["build-system"]["requires"], *meta["project"]["dependencies"]]


def unreachable(why: str) -> None:
    """Skip where pip cannot reach the package registry; fail in CI, where it must."""
    message = f"pip could not fetch the client's dependencies: {why.strip()[-500:]}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def wheelhouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the client's dependencies and build backend at the lock's pins, kept cached."""
    pins = pinned_versions(tmp_path_factory.mktemp("pins") / "pins.txt")
    wanted = requirements(CLIENT)
    key = hashlib.sha256("\n".join([*wanted, pins.read_text()]).encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    path = (
        cache.mkdir(f"client-wheelhouse-{key}")
        if cache is not None
        else tmp_path_factory.mktemp("wheelhouse")
    )
    complete = path / "complete"
    if not complete.exists():
        download = ["download", "--quiet", "--constraint", str(pins), "--dest", str(path)]
        done = pip(Path(sys.executable), *download, *wanted)
        if done.returncode != 0:
            unreachable(done.stderr)
        complete.touch()
    return path


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """A fresh venv where `pip install ./clients/python` ran, and nothing else: its bin/."""
    root = tmp_path_factory.mktemp("client-install")
    # A copy, so that the build leaves nothing behind in the repository.
    source = shutil.copytree(
        CLIENT, root / "python", ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    venv = root / "venv"
    # Without a pip of its own (bootstrapping one takes seconds): this pip installs into it.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    bin_dir = venv / "bin"
    done = pip(
        Path(sys.executable), "--python", str(bin_dir / "python"), "install", "--no-index",
        "--find-links", str(wheelhouse), str(source),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return bin_dir


def test_the_client_installs_alone_without_the_server_or_its_dependencies(
    client_venv: Path, tmp_path: Path
) -> None:
    probe = (
        "import importlib.metadata as m, importlib.util as u, json; print(json.dumps({"
        "'installed': sorted(d.metadata['Name'].lower() for d in m.distributions()),"
        "'service': u.find_spec('service') is not None}))"
    )
    done = subprocess.run(
        [str(client_venv / "python"), "-c", probe],
        cwd=tmp_path,  # not the repository, whose service/ would be importable from there
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = json.loads(done.stdout)
    assert {"consent-client", "httpx", "tenacity", "pyarrow", "tqdm", "click"} <= set(
        found["installed"]
    )
    assert SERVER_ONLY.isdisjoint(found["installed"])
    assert "consent-ledger" not in found["installed"]
    assert not found["service"]


def test_consent_client_filter_from_that_install_keeps_exactly_the_allowed_rows(
    client_venv: Path, server: LiveServer, tmp_path: Path
) -> None:
    src = dataset(tmp_path, "parquet")
    dst = tmp_path / "kept.parquet"
    env = {
        **os.environ,
        "CONSENT_URL": server.base_url,
        "CONSENT_API_KEY": server.tokens["pipeline"],
    }
    done = subprocess.run(
        [str(client_venv / "consent-client"), "filter", "--purpose", PURPOSE,
         "--column", "user_id", str(src), str(dst)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert kept_ids(dst) == [u for u in ROWS if u in set(ALLOWED)]
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    assert (manifest["kept"], manifest["service_url"]) == (len(ALLOWED), server.base_url)
