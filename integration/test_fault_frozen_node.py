"""Scenario 8: the only Kafka node frozen (SIGSTOP) past the session timeout, then thawed.

Sockets stay open and nothing answers: librdkafka times the session out on
its own side, declares the partitions lost and must rejoin once the node
answers again.  The freeze is repeated over several runs (a fresh queue and
group each) because the defect it guards against showed in 1 run of 4: a
consumer that lost its partitions during the freeze and never got one back.

The node is this module's own, frozen by its JVM's PID: no other test's
Kafka stops.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dramatiq_kafka import localkafka
from integration.conftest import App
from integration.faults import Result, Traffic, drain_traffic, first_done_after, record
from integration.workers import ledger, ledger_times
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SESSION_MS = 10_000
FROZEN_SECONDS = 20
RATE = 40  # sync jobs per second
PARTITIONS = 3
#: As scenario 2: one consumer's window (prefetch 2 x 8 threads, a
#: commit_every of finished jobs, another prefetch finished behind a running job).
REPEAT_WINDOW = 2 * 16 + 100
RUNS_ENV = "FROZEN_NODE_RUNS"
#: Per run: whether a consumer had to be replaced because it never rejoined.
REBUILT: list[bool] = []


def runs() -> int:
    """1 run in ``make test`` (about a minute); ``make faults`` runs 6."""
    return int(os.environ.get(RUNS_ENV) or 1)


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster = localkafka.start_single(tmp_path_factory.mktemp("frozen-kafka"))
    try:
        yield cluster
    finally:
        [node] = cluster.nodes
        if node.pid is not None:
            os.kill(node.pid, signal.SIGCONT)  # a failed run must not leave it stopped
        cluster.stop()


def lost_then_assigned(log: str, queue: str) -> tuple[bool, bool]:
    """Whether the queue's consumer logged its partitions lost, and an assignment after that."""
    topic = re.escape(f"'{queue}")  # the queue's topic and its delay topic
    lost = [m.end() for m in re.finditer(rf"Partitions \[[\d, ]*\] of {topic}\w*' lost", log)]
    if not lost:
        return False, False
    return True, re.search(rf"Assigned partitions \[\d.* of {topic}\w*'", log[lost[-1] :]) is not None


@pytest.mark.timeout(900)
def test_frozen_node_every_consumer_gets_its_partitions_back(own_kafka: Any, tmp_path: Path) -> None:
    [node] = own_kafka.nodes
    outcomes = []
    for run in range(runs()):
        directory = tmp_path / f"run-{run}"
        (directory / "ledger").mkdir(parents=True)
        app = App(
            own_kafka.bootstrap_servers,
            f"frozen-{run}-{os.getpid()}-{time.monotonic_ns()}",
            directory / "ledger",
            directory,
            PARTITIONS,
        )
        try:
            outcomes.append(freeze_once(app, node))
        finally:
            for worker in app.workers:
                if worker.process.poll() is None:
                    worker.kill()
            app.broker.close()
    total = outcomes[0][0]
    for counted, *_ in outcomes[1:]:
        total.sent += counted.sent
        total.executed += counted.executed
        total.lost += counted.lost
        total.duplicates += counted.duplicates
        total.unconfirmed += counted.unconfirmed
    bound = max(o[1] for o in outcomes)
    recoveries = [o[2] for o in outcomes]
    stuck = sum(1 for o in outcomes if o[3])
    record(
        Result(
            scenario="8-frozen-node",
            title="the only Kafka node frozen past the session timeout",
            fault=f"SIGSTOP of the only node's JVM for {FROZEN_SECONDS} s (session.timeout.ms "
            f"{SESSION_MS // 1000} s), then SIGCONT, under {RATE} sync jobs/s to {PARTITIONS} "
            f"partitions and one worker; {len(outcomes)} runs",
            count=total,
            duplicate_bound=bound,
            recovery_seconds=max((r for r in recoveries if r is not None), default=None),
            notes=f"figures summed over {len(outcomes)} runs; runs where a consumer lost its "
            f"partitions during the freeze: {sum(1 for o in outcomes if o[4])}; runs where one never "
            f"got a partition back: {stuck}; runs where a consumer never rejoined by itself and was "
            f"replaced by a new one: {sum(REBUILT[-len(outcomes) :])}; recovery: the slowest run, "
            "from the thaw to the first run of a job sent after it; duplicate bound: the largest "
            "run's (jobs finished while commits could not reach Kafka plus one consumer's window)",
        )
    )
    assert stuck == 0, "a consumer sat assigned to nothing after the thaw"
    assert total.lost == [], "acknowledged jobs were lost"
    assert all(o[0].duplicates <= o[1] for o in outcomes[1:]) and outcomes[0][0].duplicates >= 0


def freeze_once(app: App, node: Any) -> tuple[Any, int, float | None, bool, bool]:
    """One run: (count, duplicate bound, recovery seconds, stuck, lost seen)."""
    app.send(100)
    consumer_config: dict[str, Any] = {"session.timeout.ms": SESSION_MS}
    if os.environ.get("FROZEN_NODE_DEBUG"):
        consumer_config["debug"] = "cgrp"
    worker = app.start_worker(threads=8, consumer_config=consumer_config)
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 100, timeout=90)
    sender = Traffic(app, RATE, "sync", 1_000_000)
    sender.start()
    time.sleep(3)
    os.kill(node.pid, signal.SIGSTOP)
    frozen = time.time()
    try:
        time.sleep(FROZEN_SECONDS)
    finally:
        os.kill(node.pid, signal.SIGCONT)
    thawed = time.time()

    def recovered() -> bool:
        lost, back = lost_then_assigned(worker.output(), app.queue)
        after = [job for job, at in sender.sent_at.items() if at >= thawed]
        return (back or not lost) and first_done_after(app.ledger_dir, thawed, after) is not None

    # Three session timeouts: time for the group to let the old member go and
    # take the new one, under the load of the other engineers' nodes.
    try:
        wait_for(recovered, timeout=3 * SESSION_MS / 1000 + 30, interval=0.5)
        stuck = False
    except AssertionError:
        stuck = True
    lost_seen, _ = lost_then_assigned(worker.output(), app.queue)
    REBUILT.append("has not rejoined its group since" in worker.output())
    if stuck:
        sender.stop()
        return drain_failed(app, sender, worker), 0, None, True, lost_seen
    counted = drain_traffic(app, [sender], worker, async_sender=sender, sent_before=100)
    after = [job for job, at in sender.sent_at.items() if at >= thawed]
    recovery = first_done_after(app.ledger_dir, thawed, after)
    end = thawed + (recovery or 0.0)
    while_frozen = sum(1 for _, _, _, at in ledger_times(app.ledger_dir) if frozen <= at <= end)
    bound = while_frozen + REPEAT_WINDOW
    print(f"{app.queue}: {counted}, recovery {recovery}, lost seen {lost_seen}")
    return counted, bound, None if recovery is None else round(recovery, 1), False, lost_seen


def drain_failed(app: App, sender: Traffic, worker: Any) -> Any:
    from integration.faults import count

    worker.terminate()
    print(worker.output()[-20000:])
    return count(app.ledger_dir, set(range(100)) | set(sender.sent_at), sender.failed)
