"""Scenario 1: ``kill -9`` of a worker three times during a run, restarted each time."""

from __future__ import annotations

import time

import pytest

from integration.conftest import App
from integration.faults import Count, Result, count, fault_jobs, record
from integration.workers import ledger
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

THREADS = 8
# Per kill: up to `prefetch` (threads * 2) jobs handed out, plus up to
# `commit_every` (100) finished but not yet committed, plus jobs that
# finished behind one still running (at most another prefetch).
REPEATS_PER_KILL = 2 * 2 * THREADS + 100
# A killed member holds its partitions until its session expires (45 s by
# default); the broker's minimum keeps the suite fast.
CONSUMER = {"session.timeout.ms": 6000}


@pytest.mark.timeout(900)
def test_three_kill_9_of_the_worker_lose_no_job(app: App) -> None:
    total = fault_jobs()
    app.send(total, seconds=0.002)
    worker = app.start_worker(threads=THREADS, consumer_config=CONSUMER)
    gaps = []
    for kill in range(1, 4):
        wait_for(lambda kill=kill: len(ledger(app.ledger_dir)) >= total * kill // 4, timeout=300)
        worker.kill()
        killed = time.monotonic()
        before = len(ledger(app.ledger_dir))
        worker = app.start_worker(threads=THREADS, consumer_config=CONSUMER)
        wait_for(lambda before=before: len(ledger(app.ledger_dir)) > before, timeout=120)
        gaps.append(time.monotonic() - killed)
    app.broker.join(app.queue, timeout=600_000)
    assert worker.terminate() == 0, worker.output()

    counted: Count = count(app.ledger_dir, range(total))
    bound = 3 * REPEATS_PER_KILL
    record(
        Result(
            scenario="1-worker-kill",
            title="kill -9 of the worker, three times, restarted each time",
            fault=f"SIGKILL of the `dramatiq` process group at 1/4, 1/2 and 3/4 of {total} jobs",
            count=counted,
            duplicate_bound=bound,
            recovery_seconds=round(max(gaps), 1),
            notes="recovery: from the kill to the restarted worker's first finished job (slowest of 3); "
            "bounded by `session.timeout.ms` (6 s here, 45 s by default)",
        )
    )
    assert counted.lost == [], "jobs were lost"
    assert counted.duplicates <= bound
    committed, ends = app.committed_and_end()
    assert committed == ends
