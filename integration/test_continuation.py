"""Resumable jobs stopped by SIGTERM or by a revocation, with ``dramatiq`` CLI workers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from integration.conftest import App
from integration.workers import ledger, ledger_lines
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

STEPS = ["step1", *(f"item{i}" for i in range(5)), "step3"]


def events(app: App, job_id: int) -> list[str]:
    return [
        event
        for path in sorted(app.ledger_dir.glob("*.log"))
        for event, job, *_ in (line.split() for line in path.read_text().splitlines())
        if int(job) == job_id
    ]


def test_three_steps_run_straight_through_once(make_app: Callable[..., App]) -> None:
    app = make_app(partitions=1)
    app.stepped.send(0, 5, 0.0)
    worker = app.start_worker(threads=1)
    app.broker.join(app.queue, timeout=60_000)
    assert worker.terminate() == 0
    assert events(app, 0) == STEPS


def test_sigterm_in_step_two_resumes_at_the_cursor_after_the_restart(make_app: Callable[..., App]) -> None:
    app = make_app(partitions=1)
    app.stepped.send(0, 5, 1.0)
    app.broker.flush_producer()
    worker = app.start_worker(threads=1)
    wait_for(lambda: 0 in ledger(app.ledger_dir, "item3"), timeout=60)
    assert worker.terminate() == 0
    # Item 3 was under way: it finished, then the job stopped at its checkpoint.
    assert events(app, 0) == ["step1", "item0", "item1", "item2", "item3"]

    restarted = app.start_worker(threads=1)
    app.broker.join(app.queue, timeout=60_000)
    assert restarted.terminate() == 0
    assert events(app, 0) == ["step1", "item0", "item1", "item2", "item3", "resumed", "item4", "step3"]


def test_a_revoked_job_resumes_on_the_new_owner_without_repeating_a_step(
    make_app: Callable[..., App],
) -> None:
    app = make_app(partitions=2)
    jobs = range(12)
    for job_id in jobs:
        app.stepped.send(job_id, 20, 0.25)
    app.broker.flush_producer()
    first = app.start_worker(threads=12)
    wait_for(lambda: len(ledger(app.ledger_dir, "item2")) >= 6, timeout=60)
    second = app.start_worker(threads=12)
    app.broker.join(app.queue, timeout=120_000)
    assert first.terminate() == 0
    assert second.terminate() == 0

    resumed = ledger(app.ledger_dir, "resumed")
    assert resumed, "the joining worker took no partition with a running job"
    expected = Counter(["step1", *(f"item{i}" for i in range(20)), "step3"])
    for job_id in jobs:
        ran = Counter(event for event in events(app, job_id) if event != "resumed")
        assert ran == expected, (job_id, ran - expected, expected - ran)
    # The resumed runs happened on the joiner or on the first worker, once each.
    assert all(count == 1 for count in resumed.values())
    assert {name for name, *_ in ledger_lines(app.ledger_dir, "resumed")}
