"""Makes requirements/lock.txt from pyproject.toml with uv, and checks that it is still current."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements" / "lock.txt"
UV = Path(sys.executable).parent / "uv"

# What `make test` and CI install: the server, its dev tools, and the build backend (the project
# itself is installed without build isolation, so setuptools comes from the lock too).
EXTRAS = ("dev",)
PYTHON_VERSION = "3.11"
PLATFORM = "linux"
DIGEST_LINE = "# pyproject-sha256: "


def lock_inputs(pyproject: dict[str, Any]) -> dict[str, Any]:
    """Everything in pyproject.toml (and here) that the lock is made from."""
    project = pyproject["project"]
    return {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "extras": {extra: project["optional-dependencies"][extra] for extra in EXTRAS},
        "build-system": pyproject["build-system"]["requires"],
        "python": PYTHON_VERSION,
        "platform": PLATFORM,
    }


def inputs_digest() -> str:
    """SHA-256 of the lock's inputs: formatting and comments in pyproject.toml do not count."""
    pyproject = tomllib.loads(PYPROJECT.read_text())
    canonical = json.dumps(lock_inputs(pyproject), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_digest() -> str | None:
    """The digest written at the top of the lock when it was made, or None."""
    if not LOCK.exists():
        return None
    for line in LOCK.read_text().splitlines():
        if line.startswith(DIGEST_LINE):
            return line[len(DIGEST_LINE) :].strip()
    return None


def make(upgrade: bool) -> None:
    """Resolve with uv and write the lock, with every distribution's hash and the digest."""
    build_requires = "\n".join(tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"])
    command = [
        str(UV), "pip", "compile", "--quiet",
        "pyproject.toml", *(f"--extra={extra}" for extra in EXTRAS),
        "-",  # the build-system requirements, from stdin
        f"--python-version={PYTHON_VERSION}", f"--python-platform={PLATFORM}",
        "--generate-hashes", "--custom-compile-command=make lock",
        # Keep existing pins unless asked: a new dependency should not move every other one.
        f"--output-file={LOCK.relative_to(REPO)}",
        *(["--upgrade"] if upgrade else []),
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO, input=build_requires, text=True, check=True)
    body = LOCK.read_text()
    LOCK.write_text(
        "# The exact set `make` installs (pip install --require-hashes), made by `make lock`\n"
        "# from pyproject.toml's dependencies, its dev extra and its build backend. A test\n"
        "# fails when those change and this file was not made again.\n"
        f"{DIGEST_LINE}{inputs_digest()}\n" + body
    )


def main() -> int:
    """`python requirements/lock.py [--upgrade | --check]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail when the lock is out of date")
    group.add_argument("--upgrade", action="store_true", help="move every pin to the newest")
    args = parser.parse_args()
    if args.check:
        if recorded_digest() != inputs_digest():
            print(f"{LOCK.relative_to(REPO)} is out of date with pyproject.toml: run `make lock`")
            return 1
        return 0
    make(args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
