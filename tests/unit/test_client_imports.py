"""The pipeline client stays apart from the server: importing it loads nothing of the server."""

from __future__ import annotations

import subprocess
import sys

SERVER_ONLY = {"service", "flask", "flask_smorest", "sqlalchemy", "alembic", "gunicorn", "psycopg"}


def test_importing_the_client_and_its_commands_loads_nothing_of_the_server() -> None:
    # A fresh interpreter: this one has the server loaded already.
    code = "import sys, consent_client, consent_client.cli; print(*sys.modules, sep='\\n')"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {name.partition(".")[0] for name in done.stdout.split()}
    assert "consent_client" in loaded
    assert loaded.isdisjoint(SERVER_ONLY), sorted(loaded & SERVER_ONLY)
