"""The instance folder (default database, console secret) comes from configuration, never the
working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import create_app
from service.runtime.extensions import db

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Leave the database to its default, and work from a directory of no importance."""
    monkeypatch.delenv("CONSENT_DATABASE_URL", raising=False)
    monkeypatch.delenv("CONSENT_INSTANCE_PATH", raising=False)
    monkeypatch.setenv("CONSENT_EXPIRY_SWEEP_SECONDS", "0")
    monkeypatch.chdir(tmp_path)


def test_consent_instance_path_holds_the_default_database_and_console_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "elsewhere" / "instance"
    monkeypatch.setenv("CONSENT_INSTANCE_PATH", str(folder))
    app = create_app()
    with app.app_context():
        db.engine.dispose()
    assert app.instance_path == str(folder)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{folder / 'consent.db'}"
    assert (folder / "console-secret-key").is_file()


def test_without_it_the_checkout_instance_folder_is_used_whatever_the_working_directory() -> None:
    app = create_app({"SECRET_KEY": "not persisted"})
    with app.app_context():
        db.engine.dispose()
    assert app.instance_path == str(REPO / "instance")
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{REPO / 'instance' / 'consent.db'}"
    assert not (Path.cwd() / "instance").exists()


def test_a_relative_instance_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_INSTANCE_PATH", "instance")
    with pytest.raises(ValueError, match="absolute"):
        create_app()
