"""Delayed jobs survive a ``kill -9`` of the worker holding them."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from dramatiq.common import current_millis

from integration.conftest import App
from integration.workers import ledger
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def test_delayed_jobs_held_by_a_killed_worker_all_run_once_due(make_app: Callable[..., App]) -> None:
    app = make_app(partitions=4)
    jobs = 300
    rng = random.Random(7)
    for job_id in range(jobs):
        delay = rng.randint(500, 4000)
        app.timed.send_with_options(args=(job_id, current_millis() + delay), delay=delay)
    app.broker.flush_producer()
    worker = app.start_worker()
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 30, timeout=60)
    worker.kill()  # holding hundreds of delayed jobs, some being moved
    ran_before_kill = len(ledger(app.ledger_dir))

    restarted = app.start_worker()
    app.broker.join(app.queue, timeout=120_000)
    assert restarted.terminate() == 0
    done = ledger(app.ledger_dir)
    assert sorted(done) == list(range(jobs)), f"lost: {sorted(set(range(jobs)) - set(done))}"
    assert not ledger(app.ledger_dir, "early")
    duplicates = sum(count - 1 for count in done.values())
    print(f"\n{jobs} delayed jobs, kill -9 after {ran_before_kill} ran: 0 lost, {duplicates} duplicates")
