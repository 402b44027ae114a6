"""The benchmark script runs: a tiny size, our broker and Dramatiq's StubBroker only.

Its figures are not checked here (timings belong in the benchmark); what is
checked is that each measurement ran every job it enqueued and that the
report and its plot were written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dramatiq_kafka import BOOTSTRAP_SERVERS_ENV

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def test_benchmark_runs_on_a_tiny_size(kafka_bootstrap: str, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--only",
            "kafka,stub",
            "--tiny",
            "--out",
            str(tmp_path),
            "--json",
            str(results),
        ],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: kafka_bootstrap},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    values = json.loads(results.read_text())["values"]
    for name in ("enqueue/async", "enqueue/sync", "enqueue/bulk", "enqueue/raw", "enqueue/stub"):
        assert values[name][0] > 0, name
    for name in ("e2e/kafka", "e2e/stub", "procs1", "procs2"):
        assert values[name][0] > 0, name
    assert 0 < values["latency/kafka/p50"][0] <= values["latency/kafka/p99"][0]
    assert values["rss/1"][0] > 0 and values["rss/2"][0] > 0
    report = (tmp_path / "performance.md").read_text()
    assert "| ours, async (`send`) |" in report and "## Conditions" in report
    assert (tmp_path / "performance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Not a figure but a guarantee: every job of ours ran exactly once.
    for line in proc.stderr.splitlines():
        if "procs" in line or "rss/" in line:
            assert "'lost': 0, 'duplicated': 0" in line, line
