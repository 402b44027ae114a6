"""Scenario 4: a rebalance storm, workers joining and leaving every few seconds."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable

import pytest

from integration.conftest import App
from integration.faults import Result, Traffic, count, fault_jobs, record
from integration.workers import CliWorker, ledger_times

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PARTITIONS = 12
CHURN_EVERY = 3.0
REPEAT_WINDOW = 2 * 2 * 4 + 100  # per leaving worker of 4 threads, as in scenario 1


@pytest.mark.timeout(1200)
def test_workers_joining_and_leaving_every_few_seconds_lose_no_job(make_app: Callable[..., App]) -> None:
    total = fault_jobs()
    duration = max(40.0, total / 250)
    app = make_app(PARTITIONS)
    traffic = Traffic(app, total / duration, "async", 0, seconds=0.005, limit=total)
    running = [app.start_worker(threads=4), app.start_worker(threads=4)]
    leaving: list[CliWorker] = []
    traffic.start()
    joins = leaves = 0
    started = time.monotonic()
    while traffic.is_alive() or time.monotonic() - started < duration:
        time.sleep(CHURN_EVERY)
        if len(running) < 2 or (len(running) < 4 and joins <= leaves):
            running.append(app.start_worker(threads=4))
            joins += 1
        else:
            # SIGTERM without waiting: the storm goes on while it shuts down.
            oldest = running.pop(0)
            oldest.process.send_signal(signal.SIGTERM)
            leaving.append(oldest)
            leaves += 1
    traffic.join()
    last_sent = max(traffic.sent_at.values())
    app.broker.flush_producer(60)
    app.broker.join(app.queue, timeout=600_000)
    for worker in leaving + running:
        if worker in running:
            worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(120) == 0, worker.output()

    counted = count(app.ledger_dir, traffic.sent_at, traffic.failed)
    # While jobs kept coming, the longest time without a finished job.
    times = [at for _, _, _, at in ledger_times(app.ledger_dir) if at <= last_sent]
    longest_gap = max((b - a for a, b in itertools.pairwise(times)), default=None)
    bound = leaves * REPEAT_WINDOW
    record(
        Result(
            scenario="4-rebalance-storm",
            title="rebalance storm: workers join and leave every few seconds",
            fault=f"{total} jobs over {duration:.0f} s; every {CHURN_EVERY:.0f} s a `dramatiq` worker "
            f"(4 threads) joins or one gets SIGTERM: {joins} joins, {leaves} leaves, 1-4 workers, "
            f"{PARTITIONS} partitions, cooperative-sticky",
            count=counted,
            duplicate_bound=bound,
            recovery_seconds=None if longest_gap is None else round(longest_gap, 1),
            notes=f"{len(list(app.ledger_dir.glob('*.log')))} worker processes ran jobs; recovery: the "
            "longest time without a finished job while jobs were being sent",
        )
    )
    assert counted.lost == [], "jobs were lost"
    assert counted.sent == total
    assert counted.duplicates <= bound
    committed, ends = app.committed_and_end()
    assert committed == ends
