"""How a worker process's queues share Kafka consumers (``group.py``).

With KIP-848's protocol, one Kafka consumer per worker process whatever its number of
queues; with either protocol, every queue's partitions spread over the worker processes.
Checked the way an operator sees it: the group's members and their assignments, as Kafka
describes them, and the jobs of every queue running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from confluent_kafka.admin import AdminClient
from dramatiq import Worker

from dramatiq_kafka import KafkaBroker, QueueConfig

from .helpers import wait_for

pytestmark = pytest.mark.slow


def settled_members(broker: KafkaBroker, expected: list[set[str]]) -> list[set[str]]:
    """The topics of each member once they are ``expected`` (KIP-848 hands a member its
    partitions over several heartbeats), or as they are after 20 s."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: members(broker.bootstrap_servers, broker.group_id) == expected, interval=0.2)
    return members(broker.bootstrap_servers, broker.group_id)


def members(bootstrap: str, group: str) -> list[set[str]]:
    """The topics assigned to each member of ``group``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    return [
        {tp.topic for tp in (m.assignment.topic_partitions if m.assignment else [])}
        for m in future.result().members
    ]


#: KIP-848's protocol, where the queues of a process share one Kafka consumer.
KIP_848 = {"group.protocol": "consumer"}


def new_broker(bootstrap: str, name: str, **config: Any) -> KafkaBroker:
    return KafkaBroker(
        bootstrap_servers=bootstrap,
        group_id=f"group-{name}",
        topic_prefix=f"{name}.",
        default_queue=QueueConfig(partitions=4),
        consumer_config=config,
        status_interval=None,
    )


@pytest.fixture
def queues_broker(kafka_bootstrap: str, unique_name: str) -> Iterator[KafkaBroker]:
    broker = new_broker(kafka_bootstrap, unique_name, **KIP_848)
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


def declare(broker: KafkaBroker, queues: list[str], ran: list[str]) -> dict[str, dramatiq.Actor[..., None]]:
    actors = {}
    for queue in queues:

        def job(queue: str = queue) -> None:
            ran.append(queue)

        actors[queue] = dramatiq.actor(job, actor_name=f"job-{queue}", queue_name=queue)
    return actors


def test_a_worker_on_five_queues_is_one_member_of_its_group(queues_broker: KafkaBroker) -> None:
    ran: list[str] = []
    queues = [f"q{n}" for n in range(5)]
    actors = declare(queues_broker, queues, ran)
    for queue in queues:
        actors[queue].send()
    worker = Worker(queues_broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        for queue in queues:
            queues_broker.join(queue, timeout=30_000)
        prefix = queues_broker.topic_prefix
        expected = {f"{prefix}{q}" for q in queues} | {f"{prefix}{q}.DQ" for q in queues}
        assert settled_members(queues_broker, [expected]) == [expected]
        assert sorted(ran) == queues
    finally:
        worker.stop()


def test_a_worker_given_queues_subscribes_to_just_those(queues_broker: KafkaBroker) -> None:
    ran: list[str] = []
    actors = declare(queues_broker, ["a", "b", "c"], ran)
    for queue in ("a", "b", "c"):
        actors[queue].send()
    worker = Worker(queues_broker, worker_threads=2, worker_timeout=100, queues={"a", "b"})
    worker.start()
    try:
        queues_broker.join("a", timeout=30_000)
        queues_broker.join("b", timeout=30_000)
        prefix = queues_broker.topic_prefix
        expected = {f"{prefix}a", f"{prefix}a.DQ", f"{prefix}b", f"{prefix}b.DQ"}
        assert settled_members(queues_broker, [expected]) == [expected]
        assert sorted(ran) == ["a", "b"]
    finally:
        worker.stop()


def test_a_queue_declared_after_the_worker_started_joins_the_same_member(queues_broker: KafkaBroker) -> None:
    ran: list[str] = []
    declare(queues_broker, ["first"], ran)["first"].send()
    worker = Worker(queues_broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        queues_broker.join("first", timeout=30_000)
        declare(queues_broker, ["later"], ran)["later"].send()
        queues_broker.join("later", timeout=30_000)
        wait_for(lambda: len(members(queues_broker.bootstrap_servers, queues_broker.group_id)) == 1)
        [topics] = members(queues_broker.bootstrap_servers, queues_broker.group_id)
        assert f"{queues_broker.topic_prefix}later" in topics
        assert sorted(ran) == ["first", "later"]
    finally:
        worker.stop()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_every_queue_spreads_over_two_worker_processes(
    kafka_bootstrap: str, unique_name: str, protocol: str
) -> None:
    # Two brokers in one process stand for two worker processes.  librdkafka's
    # cooperative-sticky assignor, given both topics of a queue in one consumer,
    # gave one worker the queue's 4 partitions and the other its delay queue's.
    queues = ["a", "b", "c"]
    brokers = [new_broker(kafka_bootstrap, unique_name, **{"group.protocol": protocol}) for _ in range(2)]
    workers = []
    try:
        for broker in brokers:
            dramatiq.set_broker(broker)
            declare(broker, queues, [])
            workers.append(Worker(broker, worker_threads=1, worker_timeout=100))
            workers[-1].start()
            time.sleep(3)

        def spread() -> bool:
            held = [
                {queue: len(worker.consumers[queue].consumer.partitions.held) for queue in queues}
                for worker in workers
            ]
            return all(held[0][q] + held[1][q] == 4 and held[0][q] and held[1][q] for q in queues)

        wait_for(spread, timeout=60)
    finally:
        for worker in workers:
            worker.stop()
        for broker in brokers:
            broker.close()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_consumer_started_again_and_again_leaves_no_closed_kafka_consumer_behind(
    kafka_bootstrap: str, unique_name: str, protocol: str
) -> None:
    # Dramatiq's consumer thread makes a new consumer after every connection error, once a
    # second during an outage: each closed one must go.
    broker = new_broker(kafka_bootstrap, unique_name, **{"group.protocol": protocol})
    broker.declare_queue("again")
    try:
        for _ in range(3):
            consumer = broker.consume("again", prefetch=1, timeout=100)
            next(consumer)
            consumer.close()
        assert len(broker.group_members.members) == 1
    finally:
        broker.close()
