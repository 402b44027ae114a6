"""The sdist and the wheel as a user gets them, and the wheel in a fresh virtualenv.

Built once per session from a copy of the checkout (nothing is written into
it): the sdist first, then the wheel from the unpacked sdist, as pip would.
The fresh virtualenv has no pip of its own and borrows the dependencies of
the running one through a ``.pth`` line (plain path entries: the editable
install's finder there is not run), so only the wheel's own files decide
what ``import dramatiq_kafka`` finds.  About 15 s, most of it the user's
test session starting a Kafka node from the installed wheel.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dramatiq_kafka import BOOTSTRAP_SERVERS_ENV

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "dramatiq-kafka-broker"
#: Not part of a source distribution.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "build", "dist", ".bench",
    ".work", ".fault-results", ".ci",
)  # fmt: skip

BUILD = """
import sys
from setuptools import build_meta
print(getattr(build_meta, sys.argv[1])(sys.argv[2]))
"""


@dataclass
class Built:
    sdist: Path
    wheel: Path


def build(source: Path, what: str, out: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-c", BUILD, what, str(out)], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("packaging")
    started = time.monotonic()
    shutil.copytree(ROOT, work / "checkout", ignore=IGNORED)
    sdist = build(work / "checkout", "build_sdist", work)
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    wheel = build(unpacked, "build_wheel", work)
    print(f"\nsdist and wheel built in {time.monotonic() - started:.1f}s")
    return Built(sdist, wheel)


def test_the_wheel_has_the_launcher_the_licenses_and_complete_metadata(built: Built) -> None:
    assert built.wheel.name.startswith("dramatiq_kafka_broker-")
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(wheel.read(metadata_name))
    for name in (
        "dramatiq_kafka/localkafka/__init__.py",
        "dramatiq_kafka/kafka-pom.xml",
        "dramatiq_kafka/py.typed",
    ):
        assert name in names
    dist_info = metadata_name.rsplit("/", 1)[0]
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/COPYING"} <= names
    assert not [n for n in names if n.startswith(("tests/", "integration/", "scripts/"))]
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["License-Expression"] == "LGPL-3.0-or-later"
    assert metadata["Author"] or metadata["Author-email"]
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers and "Typing :: Typed" in classifiers
    description = metadata.get_payload()
    assert isinstance(description, str)
    # What PyPI shows first: the name, what it is, the checkout's two commands (the README
    # starts with them), then how to install it and the name clash, before any code.
    assert description.startswith(f"# {DISTRIBUTION}\n")
    head = description[:2000]
    assert f"pip install {DISTRIBUTION}" in head
    assert "Not `pip install dramatiq-kafka`" in head
    assert description.index("make demo") < description.index(f"pip install {DISTRIBUTION}")
    assert description.index(f"pip install {DISTRIBUTION}") < description.index("## Quickstart")


def test_the_sdist_has_what_its_tests_need(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for name in (
        "LICENSE",
        "COPYING",
        "CHANGELOG.md",
        "conftest.py",
        "Makefile",
        "tests/helpers.py",
        "tests/test_broker.py",
        "integration/app.py",
        "examples/basic/tasks.py",
        "scripts/localkafka.py",
        "docs/testing.md",
        "dramatiq_kafka/localkafka/__init__.py",
        "dramatiq_kafka/kafka-pom.xml",
    ):
        assert name in names, name
    assert not [n for n in names if "__pycache__" in n or n.startswith((".venv", ".git/"))]


USER_TASKS = """
import dramatiq
from dramatiq_kafka import KafkaBroker, QueueConfig

broker = KafkaBroker(group_id="user-app", queues={"words": QueueConfig(partitions=1)})
dramatiq.set_broker(broker)
COUNTS = {}


@dramatiq.actor(queue_name="words")
def count_words(doc, text):
    COUNTS[doc] = len(text.split())
"""

USER_TEST = """
import dramatiq_kafka
import tasks
from dramatiq_kafka.testing import drain


def test_counts_words():
    assert "site-packages" in dramatiq_kafka.__file__
    tasks.count_words.send("doc-1", "the quick brown fox")
    drain(tasks.broker, "words")
    assert tasks.COUNTS["doc-1"] == 4
"""


@pytest.fixture(scope="session")
def fresh_venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    started = time.monotonic()
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (dramatiq, confluent-kafka, pytest) of the running environment.
    Path(purelib, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", built.wheel],
        check=True,
        timeout=120,
    )
    print(f"\nfresh virtualenv with the wheel in {time.monotonic() - started:.1f}s")
    yield venv


def user_project(path: Path) -> Path:
    path.mkdir()
    (path / "conftest.py").write_text('pytest_plugins = ["dramatiq_kafka.testing"]\n')
    (path / "tasks.py").write_text(textwrap.dedent(USER_TASKS))
    (path / "test_tasks.py").write_text(textwrap.dedent(USER_TEST))
    return path


def test_a_users_tests_get_a_kafka_from_the_installed_wheel(fresh_venv: Path, tmp_path: Path) -> None:
    project = user_project(tmp_path / "app")
    env = {k: v for k, v in os.environ.items() if k != BOOTSTRAP_SERVERS_ENV and k != "PYTHONPATH"}
    started = time.monotonic()
    result = subprocess.run(
        [fresh_venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(f"\nthe user's session, a Kafka node started from the wheel: {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
    assert "|FAIL|rdkafka#" not in result.stderr

    command = subprocess.run(
        [fresh_venv / "bin" / "dramatiq-kafka", "--version"], capture_output=True, text=True, timeout=60
    )
    assert command.returncode == 0 and command.stdout.startswith("dramatiq-kafka 0."), command


def test_without_java_and_maven_the_users_session_says_what_is_missing(
    fresh_venv: Path, tmp_path: Path
) -> None:
    project = user_project(tmp_path / "app")
    env = {k: v for k, v in os.environ.items() if k not in (BOOTSTRAP_SERVERS_ENV, "JAVA_HOME", "PYTHONPATH")}
    env["PATH"] = str(tmp_path / "empty")  # neither java nor mvn
    env["DRAMATIQ_KAFKA_LIBS"] = str(tmp_path / "no-jars")
    result = subprocess.run(
        [fresh_venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "java not found: install Java 17+ or set JAVA_HOME" in result.stderr
    assert "mvn not found on PATH: install Maven" in result.stderr
