"""Whole-system tests: ``dramatiq`` CLI workers as subprocesses, a real Kafka."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.conftest import App
from integration.workers import ROOT, ledger
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_two_worker_processes_run_every_job_exactly_once(app: App, protocol: str) -> None:
    # "consumer" is KIP-848's protocol: the broker assigns partitions.
    config = {"group.protocol": protocol}
    first, second = (
        app.start_worker(threads=8, consumer_config=config),
        app.start_worker(threads=8, consumer_config=config),
    )
    # Both members hold partitions before the first job is sent.
    wait_for(lambda: first.assigned(app.queue) and second.assigned(app.queue), timeout=60)
    app.send(1000, seconds=0.002)
    app.broker.join(app.queue, timeout=120_000)
    assert first.terminate() == 0, first.output()
    assert second.terminate() == 0, second.output()

    done = ledger(app.ledger_dir)
    assert set(done) == set(range(1000))
    assert [job for job, runs in done.items() if runs != 1] == []
    committed, ends = app.committed_and_end()
    assert committed == ends
    assert sum(ends.values()) == 1000
    # Both workers took part (the group spread the 12 partitions).
    assert len(list(app.ledger_dir.glob("*.log"))) == 2


def test_a_job_longer_than_max_poll_interval_runs_once_without_rebalance(app: App) -> None:
    worker = app.start_worker(
        threads=2, consumer_config={"max.poll.interval.ms": 10_000, "session.timeout.ms": 6_000}
    )
    app.send(1, seconds=25)  # 2.5 x max.poll.interval.ms
    app.send(5, start=1)
    app.broker.join(app.queue, timeout=60_000)
    assert worker.terminate() == 0

    assert ledger(app.ledger_dir) == {job_id: 1 for job_id in range(6)}
    output = worker.output()
    assert "revoked" not in output.split("Stopping worker process")[0]
    assert "lost" not in output
    assert "max.poll.interval" not in output


def test_kill_9_mid_run_loses_nothing_and_repeats_a_bounded_window(app: App) -> None:
    total = 5000
    app.send(total, seconds=0.002)
    worker = app.start_worker(threads=8)
    wait_for(lambda: len(ledger(app.ledger_dir)) >= total // 3, timeout=120)
    worker.kill()
    executed_before_kill = len(ledger(app.ledger_dir))

    restarted = app.start_worker(threads=8)
    app.broker.join(app.queue, timeout=180_000)
    assert restarted.terminate() == 0

    done = ledger(app.ledger_dir)
    assert set(done) == set(range(total)), "jobs were lost"
    duplicates = sum(runs - 1 for runs in done.values())
    # Per consumer: up to `prefetch` (threads * 2) jobs handed out, plus up to
    # `commit_every` (100) finished but not yet committed, plus jobs that
    # finished behind one still running (at most another prefetch).
    bound = 2 * 16 + 100
    print(f"\nkill -9 after {executed_before_kill} of {total} jobs: {duplicates} duplicates (bound {bound})")
    assert duplicates <= bound
    committed, ends = app.committed_and_end()
    assert committed == ends


def test_a_worker_without_kafka_exits_with_an_error_naming_the_servers(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "APP_LEDGER": str(tmp_path)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "integration.app", "--processes", "1", "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert f"Kafka is not reachable at '127.0.0.1:{port}'" in result.stderr
    # librdkafka's lines go through logging, collapsed: none in its raw "%3|...|FAIL|rdkafka#" form.
    assert "|FAIL|rdkafka#" not in result.stderr, result.stderr
    assert result.stderr.count("Connection refused") <= 6, result.stderr
    elapsed = time.monotonic() - started
    print(f"\nworker without Kafka exited with code 3 after {elapsed:.1f}s")
    assert elapsed < 15
