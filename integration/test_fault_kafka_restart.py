"""Scenario 2: the single Kafka node SIGKILLed and restarted under traffic.

The node is this module's own, so that other tests never see it go away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dramatiq_kafka import localkafka
from integration.conftest import App
from integration.faults import Result, Traffic, drain_traffic, first_done_after, record
from integration.workers import ledger, ledger_times
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

DOWN_SECONDS = 5
RATE = 50  # jobs per second and sender
#: What a consumer that loses its partitions runs again at most: its prefetch
#: (2 x 8 threads), up to commit_every (100) finished jobs, and jobs finished
#: behind a running one (another prefetch).
REPEAT_WINDOW = 2 * 16 + 100


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster = localkafka.start_single(tmp_path_factory.mktemp("restarted-kafka"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(600)
def test_kafka_killed_and_restarted_every_acknowledged_job_runs(
    own_kafka: Any, make_app: Callable[..., App]
) -> None:
    [node] = own_kafka.nodes
    app = make_app(6, bootstrap=own_kafka.bootstrap_servers)
    app.send(200)  # the topics exist and the worker is busy from the start
    worker = app.start_worker(threads=8, consumer_config={"session.timeout.ms": 10_000})
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 200, timeout=60)

    senders = [Traffic(app, RATE, "sync", 1_000_000), Traffic(app, RATE, "async", 2_000_000)]
    for sender in senders:
        sender.start()
    time.sleep(4)
    node.kill()
    killed = time.time()
    time.sleep(DOWN_SECONDS)
    node.start()
    node.wait_ready()
    back = time.time()
    time.sleep(8)
    counted = drain_traffic(app, senders, worker, async_sender=senders[1], sent_before=200)
    after_restart = [job for s in senders for job, at in s.sent_at.items() if at >= back]
    recovery = first_done_after(app.ledger_dir, back, after_restart)
    # Jobs that finished while the node was away could not be committed: they
    # run again, beside the usual window of a consumer that loses its partitions.
    while_down = sum(
        1 for _, _, _, at in ledger_times(app.ledger_dir) if killed <= at <= back + recovery_or(recovery)
    )
    bound = while_down + REPEAT_WINDOW
    sync, asynchronous = senders
    record(
        Result(
            scenario="2-kafka-restart",
            title="the single Kafka node SIGKILLed and restarted",
            fault=f"SIGKILL of the only node, restarted {DOWN_SECONDS} s later (+ JVM start, "
            f"{back - killed:.1f} s down in all), while {RATE} sync and {RATE} async jobs/s were sent",
            count=counted,
            duplicate_bound=bound,
            recovery_seconds=None if recovery is None else round(recovery, 1),
            notes=f"sync: {len(sync.sent_at)} acknowledged, {len(sync.failed)} raised "
            f"({counted.unconfirmed} of all raised ran anyway: Kafka had them); async: "
            f"{len(asynchronous.sent_at)} delivered, {len(asynchronous.failed)} failed; the same worker "
            "process reconnected by itself; recovery: from the node being ready again to the first run "
            "of a job sent after that; it waits out the old member's session.timeout.ms (10 s here) that "
            "the restarted coordinator restores; duplicate bound: jobs finished while commits could not "
            "reach Kafka, plus one consumer's window",
        )
    )
    assert counted.lost == [], "acknowledged jobs were lost"
    assert counted.duplicates <= bound
    assert len(list(app.ledger_dir.glob("*.log"))) == 1, "one worker process did it all"
    assert recovery is not None, "no job sent after the restart ran"
    assert all(reason.startswith(("DeliveryTimeout", "DeliveryError")) for reason in failed_reasons(senders))


def recovery_or(recovery: float | None) -> float:
    return recovery if recovery is not None else 0.0


def failed_reasons(senders: list[Traffic]) -> list[str]:
    return [reason for sender in senders for reason in sender.failed.values()]
