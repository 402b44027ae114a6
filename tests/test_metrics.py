"""KafkaMetrics: the broker's own figures, read from a Prometheus registry."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq import Worker
from prometheus_client import CollectorRegistry

from dramatiq_kafka import DeadLetter, DeliveryError, KafkaBroker, QueueConfig
from dramatiq_kafka.events import EVENTS
from dramatiq_kafka.metrics import KafkaMetrics
from tests.helpers import wait_for


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Iterator[KafkaMetrics]:
    metrics = KafkaMetrics(registry=registry, lag_interval=0.2)
    yield metrics
    EVENTS.unsubscribe(metrics)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_retries_dead_letters_and_paused_partitions(
    kafka_bootstrap: str, unique_name: str, registry: CollectorRegistry, metrics: KafkaMetrics
) -> None:
    queue = unique_name
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={
            queue: QueueConfig(
                # The partition stays paused for a second: long enough to be seen under load.
                partitions=2,
                min_backoff=1000,
                max_backoff=1000,
                dead_letter=DeadLetter(max_retries=1),
            )
        },
    )
    broker.add_middleware(metrics)
    dramatiq.set_broker(broker)
    failed = threading.Event()

    @dramatiq.actor(queue_name=queue)
    def fails() -> None:
        failed.set()
        raise RuntimeError("no")

    @dramatiq.actor(queue_name=queue)
    def works() -> None: ...

    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        for _ in range(3):
            works.send()
        fails.send()
        failed.wait(30)
        # While the job waits for its retry, its partition is paused.
        wait_for(lambda: value(registry, "dramatiq_kafka_paused_partitions", queue_name=queue) == 1)
        broker.join(queue, timeout=60_000, fail_fast=False)
        wait_for(lambda: value(registry, "dramatiq_kafka_paused_partitions", queue_name=queue) == 0)
        # The lag thread reads the group's commits.
        wait_for(
            lambda: (
                registry.get_sample_value(
                    "dramatiq_kafka_consumer_lag", {"queue_name": queue, "partition": "0"}
                )
                == 0
            )
        )
    finally:
        worker.stop()
        broker.close()
    assert value(registry, "dramatiq_kafka_retries_total", queue_name=queue) == 1
    assert value(registry, "dramatiq_kafka_dead_letters_total", queue_name=queue, topic=f"{queue}.XQ") == 1


def test_lag_against_known_commits(
    kafka_bootstrap: str, unique_name: str, registry: CollectorRegistry, metrics: KafkaMetrics
) -> None:
    queue = unique_name
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={queue: QueueConfig(partitions=1)},
        dispatch_method="sync",
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue)
    def job() -> None: ...

    try:
        for _ in range(4):
            job.send()
        assert metrics.update_lag(broker) == {queue: 4}
        assert value(registry, "dramatiq_kafka_consumer_lag", queue_name=queue, partition="0") == 4
        worker = Worker(broker, worker_threads=2, worker_timeout=100)
        worker.start()
        try:
            broker.join(queue, timeout=60_000)
        finally:
            worker.stop()
        assert metrics.update_lag(broker)[queue] == 0
        assert value(registry, "dramatiq_kafka_consumer_lag", queue_name=queue, partition="0") == 0
    finally:
        broker.close()


def test_delivery_errors(
    kafka_bootstrap: str, unique_name: str, registry: CollectorRegistry, metrics: KafkaMetrics
) -> None:
    queue = unique_name
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        # The topic refuses records over 1 kB; the producer would send 1 MB.
        queues={queue: QueueConfig(partitions=1, topic_config={"max.message.bytes": "1000"})},
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue)
    def job(blob: str) -> None: ...

    try:
        # Delivered before the large one: a batch the broker refuses fails as a whole.
        job.send_with_options(args=("x",), dispatch_method="sync")
        job.send(os.urandom(8000).hex())
        with pytest.raises(DeliveryError):
            broker.flush_producer()
    finally:
        broker.close()
    assert value(registry, "dramatiq_kafka_delivery_errors_total", topic=queue) == 1
