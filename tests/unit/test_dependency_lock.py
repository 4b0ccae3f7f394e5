"""The lock CI installs from was made from the dependencies pyproject.toml declares now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_lock_was_made_again_after_the_dependencies_last_changed() -> None:
    result = subprocess.run(
        [sys.executable, "requirements/lock.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
