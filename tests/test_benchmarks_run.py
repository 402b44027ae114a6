"""The benchmarks run (on tiny sizes); their figures live in docs/delays.md and docs/dashboard.md."""

from __future__ import annotations

import json
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


@pytest.mark.slow
def test_the_scaling_benchmark_measures_both_protocols(kafka_bootstrap: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scaling.py"),
            *("--queues", "2", "--processes", "2", "--fleet-queues", "2", "--jobs", "200"),
        ],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.split("RESULTS ", 1)[1])
    assert figures["idle"]["this KIP-848"]["2"]["members"] == 1
    assert figures["idle"]["this classic"]["2"]["members"] == 4  # 2 queues and their delay queues
    assert figures["fleet"]["this KIP-848"]["members"] == 2
    assert figures["throughput"]["this classic"] > 0


@pytest.mark.slow
def test_the_sync_threads_benchmark_prints_its_ratio(kafka_bootstrap: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sync_threads.py"), "--rounds", "1", "--sends", "80"],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "8 threads at once" in result.stdout
