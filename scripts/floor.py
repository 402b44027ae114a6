#!/usr/bin/env python3
"""Run the tests that lean on Dramatiq most against the lowest Dramatiq pyproject.toml allows.

``make setup`` installs the newest Dramatiq the requirement allows, and ``make test`` runs
everything on it.  This runs the fast tests of the files that use Dramatiq's internals (the
message, its encoder, the retry options and the ack path: ``FLOOR_TESTS``, about 35 s) once
more, in a venv of its own (``.venv-floor``) with Dramatiq pinned at the floor of the
requirement (``dramatiq>=X``), so the floor is a version this project is tested with.  When the
floor is the version already installed there is nothing more to run.  The whole fast suite
would take 8 minutes or more on 2 cores, more than CI can spare for it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-floor"
FLOOR_TESTS = [
    "tests/test_wire.py",
    "tests/test_encoders.py",
    "tests/test_settings.py",
    "tests/test_retries.py",
    "tests/test_broker.py",
]


def floor_of(package: str) -> str:
    """The ``>=`` bound of ``package`` in pyproject.toml's dependencies."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    for requirement in dependencies:
        match = re.match(rf"{package}\s*>=\s*([0-9][0-9.]*)", requirement)
        if match:
            # "2.2" is the release "2.2.0", as the installed version spells it.
            parts = match[1].split(".")
            return ".".join(parts + ["0"] * (3 - len(parts)))
    sys.exit(f"pyproject.toml has no '{package}>=' requirement")


def installed(python: Path, package: str) -> str | None:
    if not python.exists():
        return None
    result = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def main() -> None:
    floor = floor_of("dramatiq")
    newest = installed(ROOT / ".venv" / "bin" / "python", "dramatiq")
    if newest == floor:
        print(f"Dramatiq floor {floor} is the installed version: `make test` ran on it.")
        return
    python = VENV / "bin" / "python"
    if installed(python, "dramatiq") != floor:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-e", f"{ROOT}[dev]", f"dramatiq=={floor}"], check=True)
    print(f"Tests on Dramatiq {floor}, the floor (`make test` ran on {newest}):", flush=True)
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *FLOOR_TESTS, "-m", "not slow"]
    code = subprocess.run(command, cwd=ROOT).returncode
    sys.exit(code)


if __name__ == "__main__":
    main()
