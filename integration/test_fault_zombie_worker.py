"""Scenario 9: a zombie worker, frozen (SIGSTOP) past its session timeout and thawed.

One of two workers stops answering in the middle of a steady run, as in a
long GC pause or a paused VM: the group gives its partitions to the other
worker.  When it wakes up it still holds jobs of partitions it no longer
owns; it must find out, commit nothing for them, and carry on with what the
group gives it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.conftest import App
from integration.faults import Result, Traffic, count, fault_jobs, record
from integration.workers import ledger, ledger_lines, ledger_times
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PARTITIONS = 6
THREADS = 8
SESSION_MS = 10_000
FROZEN_SECONDS = 16
#: What the zombie can run again or have run for nothing: what it had in
#: flight and fetched (prefetch 2 x threads, twice: running and finished
#: behind a running one) and the finished jobs not yet committed (commit_every).
IN_FLIGHT_BOUND = 2 * 2 * THREADS + 100


@pytest.mark.timeout(900)
def test_a_zombie_worker_commits_nothing_for_partitions_it_lost(make_app: Callable[..., App]) -> None:
    total = fault_jobs(3000)
    duration = max(40.0, total / 100)
    app = make_app(PARTITIONS)
    consumer_config = {"session.timeout.ms": SESSION_MS}
    zombie = app.start_worker(threads=THREADS, consumer_config=consumer_config)
    other = app.start_worker(threads=THREADS, consumer_config=consumer_config)
    app.send(60, seconds=0.01)
    wait_for(lambda: zombie.assigned(app.queue) and other.assigned(app.queue), timeout=90)
    traffic = Traffic(app, total / duration, "async", 1_000_000, seconds=0.01, limit=total)
    traffic.start()
    time.sleep(min(8.0, duration / 4))
    zombie_pids = group_pids(zombie.process.pid)
    os.killpg(zombie.process.pid, signal.SIGSTOP)
    frozen = time.time()
    time.sleep(FROZEN_SECONDS)
    os.killpg(zombie.process.pid, signal.SIGCONT)
    thawed = time.time()
    traffic.join()
    app.broker.flush_producer(60)
    app.broker.join(app.queue, timeout=300_000)
    committed, end = app.committed_and_end()
    for worker in (zombie, other):
        assert worker.process.poll() is None, worker.output()
        assert worker.terminate() == 0, worker.output()

    counted = count(app.ledger_dir, set(range(60)) | set(traffic.sent_at), traffic.failed)
    # The zombie's runs in the first seconds after waking, for partitions the
    # other worker held by then: all of them ran there too (its acks for them
    # never moved the group's offsets past them).
    runs = ledger_lines(app.ledger_dir)
    zombie_runs = {job for name, job, _, _ in runs if name in zombie_pids}
    other_runs = {job for name, job, _, _ in runs if name not in zombie_pids}
    woke_with = [
        job
        for job, _, _, at in ledger_times(app.ledger_dir)
        if thawed <= at <= thawed + 2 and job in zombie_runs and job not in other_runs
    ]
    done = ledger(app.ledger_dir)
    after_wake = sum(
        1 for job, _, _, at in ledger_times(app.ledger_dir) if at > thawed + 5 and job in zombie_runs
    )
    log = zombie.output()
    record(
        Result(
            scenario="9-zombie-worker",
            title="a zombie worker (frozen past its session, then thawed)",
            fault=f"SIGSTOP of one of two workers ({THREADS} threads each, session.timeout.ms "
            f"{SESSION_MS // 1000} s) for {FROZEN_SECONDS} s, then SIGCONT, under "
            f"{total / duration:.0f} async jobs/s to {PARTITIONS} partitions",
            count=counted,
            duplicate_bound=IN_FLIGHT_BOUND,
            notes=f"the zombie ran {len(woke_with)} jobs in the 2 s after waking that no one else ran "
            f"(its own partitions again or in flight), {after_wake} jobs later on what it was given; "
            f"{sum(1 for j in done if done[j] > 1)} jobs ran twice; bound: prefetch 2 x {THREADS} "
            "threads running and as many finished behind them, plus commit_every (100)",
            extra={"frozen_seconds": round(thawed - frozen, 1)},
        )
    )
    assert counted.lost == [], "acknowledged jobs were lost"
    assert counted.duplicates <= IN_FLIGHT_BOUND
    assert committed == end, f"a partition is stuck: committed {committed}, end {end}"
    assert " lost." in log or "revoked." in log, "the zombie never found out"
    assert after_wake > 0, "the zombie did not carry on with what it was given"


def group_pids(pgid: int) -> set[str]:
    """The processes of a worker's process group, by PID (the names of its ledger files)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.add(stat.parent.name)
    return pids
