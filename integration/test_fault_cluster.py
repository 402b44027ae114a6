"""Scenario 3: the leader of a busy partition killed in a 3-node cluster under load.

Replication 3 and ``min.insync.replicas=2`` (the cluster's defaults, see
``scripts/localkafka.py``): ``acks=all`` writes go on with two nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from dramatiq_kafka import localkafka
from integration.conftest import App
from integration.faults import Result, Traffic, drain_traffic, record
from integration.workers import ledger, ledger_times
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PARTITIONS = 6
RECOVERY_BOUND = 15.0
REPEAT_WINDOW = 2 * 16 + 100


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster = localkafka.start_cluster(3, tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: info.leader for p, info in metadata.topics[topic].partitions.items()}


def ends(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "observer"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in partitions
        }
    finally:
        consumer.close()


@pytest.mark.timeout(600)
def test_the_leader_of_a_busy_partition_killed_loses_nothing_and_jobs_flow_again_soon(
    cluster: Any, make_app: Callable[..., App]
) -> None:
    app = make_app(PARTITIONS, bootstrap=cluster.bootstrap_servers)
    app.send(100)
    worker = app.start_worker(threads=8)
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 100, timeout=90)

    senders = [Traffic(app, 100, "async", 1_000_000), Traffic(app, 20, "sync", 2_000_000)]
    for sender in senders:
        sender.start()
    time.sleep(6)
    leader_of = leaders(cluster.bootstrap_servers, app.queue)
    victim = leader_of[0]
    led = sorted(p for p, leader in leader_of.items() if leader == victim)
    written = ends(cluster.bootstrap_servers, app.queue, led)
    cluster.node(victim).kill()
    killed = time.time()
    time.sleep(20)
    counted = drain_traffic(app, senders, worker, async_sender=senders[0], sent_before=100)
    # Jobs flow again in a partition the dead node led once a record written
    # there after the kill (through the new leader) has run.
    flowing = {}
    for _, partition, offset, at in ledger_times(app.ledger_dir):
        if partition in written and offset >= written[partition] and partition not in flowing:
            flowing[partition] = at - killed
    recovery = max(flowing.values()) if len(flowing) == len(led) else None
    record(
        Result(
            scenario="3-cluster-leader-kill",
            title="3-node cluster: the leader of a busy partition killed",
            fault=f"SIGKILL of node {victim}, leader of partitions {led} of {PARTITIONS} (replication 3, "
            "min.insync.replicas=2), under 100 async + 20 sync jobs/s",
            count=counted,
            duplicate_bound=REPEAT_WINDOW,
            recovery_seconds=None if recovery is None else round(recovery, 1),
            recovery_bound=RECOVERY_BOUND,
            notes=f"sync sends that raised: {len(senders[1].failed)} ({counted.unconfirmed} of all raised "
            "ran anyway); recovery: from the kill to the first run, in every partition the node led, of a "
            "record written there after the kill",
        )
    )
    assert counted.lost == [], "acknowledged jobs were lost"
    assert counted.duplicates <= REPEAT_WINDOW
    assert recovery is not None, f"no new job ran in partitions {sorted(set(led) - set(flowing))}"
    assert recovery <= RECOVERY_BOUND
