"""``dramatiq-gevent`` is not supported: its workers fail at boot, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_a_gevent_worker_exits_at_boot_with_the_reason(kafka_bootstrap: str) -> None:
    command = [str(Path(sys.executable).with_name("dramatiq-gevent")), "examples.basic.tasks"]
    env = {**os.environ, "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = subprocess.run(
        [*command, "--processes", "1", "--threads", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # before the check, such a worker never became ready and ignored SIGTERM
    )
    assert result.returncode != 0
    assert "KafkaBroker does not run under gevent" in result.stderr
    assert "Run the threaded worker, `dramatiq`" in result.stderr


def test_sending_from_a_gevent_app_fails_at_once_with_the_reason() -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "from dramatiq_kafka import KafkaBroker\n"
        "KafkaBroker(bootstrap_servers='127.0.0.1:9')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ConfigurationError: KafkaBroker does not run under gevent" in result.stderr
