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


def run_benchmark(kafka_bootstrap: str, script: str, *args: str, timeout: float = 240) -> str:
    """Run ``benchmarks/{script}`` on the session's Kafka; its output, once it exited 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_the_delay_benchmark_prints_its_table(kafka_bootstrap: str) -> None:
    stdout = run_benchmark(kafka_bootstrap, "delays.py", "--jobs", "2000", "--seconds", "2")
    assert "RSS (MB)" in stdout
    assert "(200 of 200 ran)" in stdout


@pytest.mark.slow
def test_the_dashboard_benchmark_prints_its_table(kafka_bootstrap: str) -> None:
    stdout = run_benchmark(kafka_bootstrap, "dashboard.py", "--queues", "3", "--partitions", "2")
    assert "overview, batched, uncached" in stdout


@pytest.mark.slow
def test_the_scaling_benchmark_measures_both_protocols(kafka_bootstrap: str) -> None:
    stdout = run_benchmark(
        kafka_bootstrap,
        *("scaling.py", "--queues", "2", "--processes", "2", "--fleet-queues", "2", "--jobs", "200"),
        timeout=400,
    )
    figures = json.loads(stdout.split("RESULTS ", 1)[1])
    assert figures["idle"]["this KIP-848"]["2"]["members"] == 1
    assert figures["idle"]["this classic"]["2"]["members"] == 4  # 2 queues and their delay queues
    assert figures["fleet"]["this KIP-848"]["members"] == 2
    assert figures["throughput"]["this classic"] > 0


@pytest.mark.slow
def test_the_sync_threads_benchmark_prints_its_ratio(kafka_bootstrap: str) -> None:
    stdout = run_benchmark(kafka_bootstrap, "sync_threads.py", "--rounds", "1", "--sends", "80")
    assert "8 threads at once" in stdout
