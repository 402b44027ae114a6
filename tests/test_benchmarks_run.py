"""The benchmarks run (on tiny sizes); their figures live in docs/delays.md and docs/dashboard.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dramatiq_kafka import BOOTSTRAP_SERVERS_ENV

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_delay_benchmark_prints_its_table(kafka_bootstrap: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "delays.py"), "--jobs", "2000", "--seconds", "2"],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RSS (MB)" in result.stdout
    assert "(200 of 200 ran)" in result.stdout


@pytest.mark.slow
def test_the_dashboard_benchmark_prints_its_table(kafka_bootstrap: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dashboard.py"), "--queues", "3", "--partitions", "2"],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "overview, batched, uncached" in result.stdout
