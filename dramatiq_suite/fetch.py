#!/usr/bin/env python3
"""Lay out Dramatiq's own behavioural tests, for the installed Dramatiq, against a KafkaBroker.

The tests come from Dramatiq's sdist on the package index (``pip download dramatiq==VERSION
--no-binary :all:``), so setting up needs nothing but the package index; they are never copied
into this repository.  Only the test files that use Dramatiq's ``stub_broker`` fixture are kept:
they are the ones about what a broker does.  They land in ``.dramatiq-suite/VERSION/dramatiq_tests/``
beside a ``conftest.py`` and a ``common.py`` that stand for Dramatiq's own (which its sdist does not
ship): ``stub_broker`` is a ``KafkaBroker`` there (see ``dramatiq_suite/plugin.py``).

``--source DIR`` takes the tests from a checkout of Dramatiq instead (its ``tests/`` with the
``middleware/`` tests that the sdist lacks), for a developer who has one.

Prints the directory to give pytest.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = ROOT / ".dramatiq-suite"
PACKAGE = "dramatiq_tests"
#: Stand-ins for Dramatiq's tests/conftest.py and tests/common.py, which the sdist lacks.
SHIMS = {
    "__init__.py": '"""Dramatiq\'s own tests, fetched by dramatiq_suite/fetch.py."""\n',
    "conftest.py": "from dramatiq_suite.plugin import *  # noqa: F403\n",
    "common.py": "from dramatiq_suite.common import *  # noqa: F403\n",
}


def uses_stub_broker(path: Path) -> bool:
    return "stub_broker" in path.read_text(encoding="utf-8")


def lay_out(tests: Path, target: Path) -> int:
    """Copy the test files of ``tests`` that use ``stub_broker`` into ``target``; their count."""
    count = 0
    for source in sorted(tests.rglob("test_*.py")):
        relative = source.relative_to(tests)
        if not uses_stub_broker(source) or "benchmarks" in relative.parts:
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        for parent in destination.relative_to(target).parents:
            init = target / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
        shutil.copyfile(source, destination)
        count += 1
    # Subpackages (middleware/ of a checkout) import ``..common`` and see this conftest too.
    for name, text in SHIMS.items():
        (target / name).write_text(text)
    return count


def download(version: str, into: Path) -> Path:
    """Dramatiq's sdist for ``version``, unpacked in ``into``: its ``tests/`` directory."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", f"dramatiq=={version}"),
            *("--no-binary", ":all:", "--no-deps", "--dest", str(into)),
        ],
        check=True,
    )
    (archive,) = into.glob("dramatiq-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / f"dramatiq-{version}" / "tests"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a Dramatiq checkout to take tests/ from")
    args = parser.parse_args()
    version = importlib.metadata.version("dramatiq")
    name = version if args.source is None else f"{version}-checkout"
    target = SUITES / name / PACKAGE
    done = target / ".complete"
    if not done.exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with tempfile.TemporaryDirectory() as tmp:
            tests = args.source / "tests" if args.source is not None else download(version, Path(tmp))
            count = lay_out(tests, target)
        if not count:
            sys.exit(f"no test file of Dramatiq {version} uses stub_broker: has its layout changed?")
        done.write_text(f"{count}\n")
    print(target.relative_to(ROOT))


if __name__ == "__main__":
    main()
