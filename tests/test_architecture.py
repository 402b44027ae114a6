"""``docs/architecture.md`` names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dramatiq_kafka"


def module_rows() -> list[tuple[list[str], str]]:
    """The rows of the doc's module table: the names in their first cell, and the second cell."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## The modules", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def test_every_module_named_in_the_architecture_exists() -> None:
    missing = []
    for names, job in module_rows():
        for name in names:
            if not (PACKAGE / name).exists():
                missing.append(name)
        # A package's row names its files in parentheses: `file.py` inside it.
        for package in (name for name in names if name.endswith("/")):
            missing += [
                f"{package}{name}"
                for name in re.findall(r"`([\w.]+\.py)`", job)
                if not (PACKAGE / package / name).exists() and not (PACKAGE / name).exists()
            ]
    assert missing == [], f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_of_the_package_is_in_the_architecture() -> None:
    named = {name for names, _ in module_rows() for name in names}
    present = {
        path.name + ("/" if path.is_dir() else "")
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py") or (path / "__init__.py").exists()
    }
    assert sorted(present - named) == [], "modules missing from docs/architecture.md's table"
