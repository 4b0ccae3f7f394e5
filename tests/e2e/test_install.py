"""A plain (non-editable) `pip install` of the repository deploys: it migrates, makes keys and
serves, and every command finds the same database whatever directory it is run from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.server import gunicorn
from tests.api.console_client import CSRF_RE
from tests.conftest import ON_POSTGRES

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"

pytestmark = pytest.mark.skipif(
    ON_POSTGRES, reason="installing does not depend on the database; checked on the SQLite run"
)


def run(command: list[str], cwd: Path, timeout: float = 120) -> str:
    """Run a command in `cwd`; return its standard output, or fail with everything it said."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def source_tree(destination: Path) -> Path:
    """The files a clean clone would hold (with this working tree's changes), copied: building
    in the checkout itself would reuse its build/ folder, stale files and all."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO)
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():  # tracked files deleted in the working tree are listed too
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            (destination / name).write_bytes((REPO / name).read_bytes())
    return destination


def pinned_versions(destination: Path) -> Path:
    """The lock's versions without their hashes, as pip constraints: the install resolves to
    exactly what CI runs, from pip's cache once it has them (a path has no hash to check)."""
    pins = [line.split()[0] for line in LOCK.read_text().splitlines() if "==" in line]
    destination.write_text("\n".join(pins) + "\n")
    return destination


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the repository installed as a wheel, not editable."""
    root = tmp_path_factory.mktemp("install")
    source = source_tree(root / "source")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    constraints = pinned_versions(root / "pins.txt")
    install = ["install", "--quiet", "--no-compile", "-c", str(constraints), str(source)]
    run([*pip, *install], root, timeout=600)
    return venv


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CONSENT_* setting and no PYTHONPATH: the installed defaults alone decide."""
    for name in list(os.environ):
        if name.startswith("CONSENT_") or name == "PYTHONPATH":
            monkeypatch.delenv(name)


def site_packages(venv: Path) -> Path:
    """The venv's site-packages folder."""
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


# Where each folder of the checkout that the wheel carries lands in site-packages.
SHIPPED = {
    "service/": "service/",
    "migrations/": "service/migrations/",
    "clients/python/consent_client/": "consent_client/",
}


def test_the_wheel_carries_every_module_template_and_migration(venv: Path) -> None:
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], REPO)
    expected = {
        name.replace(folder, installed_as, 1)
        for name in listed.splitlines()
        for folder, installed_as in SHIPPED.items()
        if name.startswith(folder) and (REPO / name).is_file()
    }
    root = site_packages(venv)
    installed = {
        str(path.relative_to(root))
        for package in ("service", "consent_client")
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert installed == expected


def test_an_installed_server_migrates_serves_and_keeps_one_database_from_any_directory(
    venv: Path, tmp_path: Path, clean_environ: None
) -> None:
    consent = str(venv / "bin" / "consent")
    places = {name: tmp_path / name for name in ("migrate", "create", "serve", "list")}
    for place in places.values():
        place.mkdir()

    run([consent, "db", "upgrade"], places["migrate"])
    token = run([consent, "keys", "create", "--role", "admin", "--name", "x"], places["create"])
    token = token.strip().splitlines()[-1]

    # Ready only when the database answers and is at the head of the migrations it shipped with.
    with gunicorn(places["serve"], "installed", venv=venv) as server:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            purposes = http.get("/v1/purposes", headers={"Authorization": f"Bearer {token}"})
            assert purposes.status_code == 200, purposes.text
            assert purposes.json() == []

            sign_in = http.get("/console", follow_redirects=True)
            assert sign_in.status_code == 200
            assert sign_in.url.path == "/console/sign-in"
            stylesheet = http.get("/console/static/console.css")
            assert stylesheet.status_code == 200
            assert stylesheet.headers["Content-Type"].startswith("text/css")
            csrf = CSRF_RE.search(sign_in.text)
            assert csrf, sign_in.text
            signed_in = http.post(
                "/console/sign-in", data={"csrf_token": csrf.group(1), "token": token}
            )
            assert signed_in.status_code == 302, signed_in.text
            assert http.get("/console/users").status_code == 200

    assert "x " in run([consent, "keys", "list"], places["list"])
    # Flask's instance folder for an installed package, and nothing in any working directory.
    instance = venv / "var" / "service-instance"
    assert {p.name for p in instance.iterdir()} >= {"consent.db", "console-secret-key"}
    assert not [p for place in places.values() for p in place.iterdir() if p.suffix != ".log"]
