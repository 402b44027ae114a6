"""Whole-system tests: ``dramatiq`` CLI workers as subprocesses, a real Kafka."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dramatiq_kafka import KafkaBroker, QueueConfig
from integration.workers import ROOT, CliWorker, ledger
from tests.helpers import committed_and_end, wait_for

pytestmark = pytest.mark.slow


class App:
    """The test's side of ``integration/app.py``: same group, same queue."""

    def __init__(self, bootstrap: str, name: str, ledger_dir: Path, log_dir: Path, partitions: int) -> None:
        self.queue = name
        self.group = f"group-{name}"
        self.ledger_dir = ledger_dir
        self.log_dir = log_dir
        self.env = {
            "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "APP_GROUP": self.group,
            "APP_QUEUE": name,
            "APP_PARTITIONS": str(partitions),
            "APP_LEDGER": str(ledger_dir),
        }
        self.broker = KafkaBroker(
            bootstrap_servers=bootstrap,
            group_id=self.group,
            queues={name: QueueConfig(partitions=partitions)},
        )
        dramatiq.set_broker(self.broker)
        self.work = dramatiq.actor(lambda job_id, seconds=0.0: None, actor_name="work", queue_name=name)
        self.workers: list[CliWorker] = []

    def send(self, count: int, seconds: float = 0.0, start: int = 0) -> None:
        for job_id in range(start, start + count):
            self.work.send(job_id, seconds)
        self.broker.flush_producer()

    def start_worker(self, *, threads: int = 8, consumer_config: dict[str, Any] | None = None) -> CliWorker:
        env = dict(self.env)
        if consumer_config:
            env["APP_CONSUMER_CONFIG"] = json.dumps(consumer_config)
        worker = CliWorker(env, self.log_dir / f"worker-{len(self.workers)}.log", threads=threads)
        self.workers.append(worker)
        return worker

    def committed_and_end(self) -> tuple[dict[int, int], dict[int, int]]:
        return committed_and_end(self.broker.bootstrap_servers, self.group, self.queue)


@pytest.fixture
def app(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Iterator[App]:
    (tmp_path / "ledger").mkdir()
    app = App(kafka_bootstrap, unique_name, tmp_path / "ledger", tmp_path, partitions=12)
    yield app
    for worker in app.workers:
        if worker.process.poll() is None:
            worker.kill()
    app.broker.close()


def test_two_worker_processes_run_every_job_exactly_once(app: App) -> None:
    first, second = app.start_worker(threads=8), app.start_worker(threads=8)
    # Both members hold partitions before the first job is sent.
    wait_for(
        lambda: all(
            re.search(rf"Assigned partitions \[\d.* of '{app.queue}'", w.output()) for w in (first, second)
        ),
        timeout=60,
    )
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
    app.send(1, seconds=15)
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
    assert time.monotonic() - started < 30
