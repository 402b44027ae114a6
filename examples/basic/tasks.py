"""The smallest dramatiq-kafka application: one broker line, plain actors.

Run a worker with ``dramatiq examples.basic.tasks`` and enqueue with
``python -m examples.basic.enqueue``.  Kafka is found through
``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` (default ``localhost:9092``).
"""

from __future__ import annotations

import logging

import dramatiq

from dramatiq_kafka import KafkaBroker, QueueConfig

broker = KafkaBroker(group_id="basic-example", queues={"basic": QueueConfig(partitions=6)})
dramatiq.set_broker(broker)

logger = logging.getLogger("examples.basic")


@dramatiq.actor(queue_name="basic")
def add(x: int, y: int) -> None:
    logger.warning("add(%d, %d) = %d", x, y, x + y)


@dramatiq.actor(queue_name="basic", dispatch_method="sync", max_retries=0)
def divide(x: int, y: int) -> None:
    logger.warning("divide(%d, %d) = %s", x, y, x / y)
