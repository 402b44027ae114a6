"""Every example under examples/ runs, so none rots.

Each directory ``examples/NAME/`` is found by itself.  One with ``tasks.py``
and ``enqueue.py`` runs as its docstring says: a real ``dramatiq
examples.NAME.tasks`` worker, then ``python -m examples.NAME.enqueue``,
which enqueues and waits (``broker.join``) until the group committed every
job, failing otherwise.  One with ``test_*.py`` files is a user's test
suite: ``pytest`` runs in it (with a Kafka node of its own, see below).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import closed_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(
    path for path in (ROOT / "examples").iterdir() if path.is_dir() and not path.name.startswith(("_", "."))
)

pytestmark = pytest.mark.slow


def test_examples_are_found() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"basic", "context", "dispatch", "django_app", "metrics", "testing"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(example: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        # Dramatiq's Prometheus middleware (examples/metrics): loopback, a free port, our own files.
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(closed_port()),
        "dramatiq_prom_db": str(tmp_path / "prometheus"),
    }
    ran = []
    if (example / "tasks.py").is_file() and (example / "enqueue.py").is_file():
        ran.append(run_app(example, env, tmp_path / "worker.log"))
    tests = sorted(example.glob("test_*.py"))
    if tests:
        # Without $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS: the plugin of dramatiq_kafka.testing starts
        # its own node with scripts/localkafka.py, as on a developer's machine.
        alone = {name: value for name, value in env.items() if name != "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS"}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=example,
            env=alone,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        passed = re.search(r"(\d+) passed", result.stdout)
        assert passed is not None and int(passed[1]) >= 1, result.stdout
        ran.append("pytest")
    assert ran, f"{example} has neither tasks.py + enqueue.py nor test_*.py: how is it run?"


def run_app(example: Path, env: dict[str, str], log: Path) -> str:
    module = f"examples.{example.name}"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", f"{module}.tasks", "--processes", "1", "--threads", "4"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        result = subprocess.run(
            [sys.executable, "-m", f"{module}.enqueue"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"{result.stdout}{result.stderr}\nworker:\n{log.read_text()[-4000:]}"
        assert worker.poll() is None, f"the worker exited early:\n{log.read_text()[-4000:]}"
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-4000:]
    return module
