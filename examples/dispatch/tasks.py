"""One actor per dispatch option.  Run a worker with ``dramatiq examples.dispatch.tasks``."""

from __future__ import annotations

import logging

import dramatiq

from dramatiq_kafka import KafkaBroker, QueueConfig

broker = KafkaBroker(group_id="dispatch-example", queues={"orders": QueueConfig(partitions=6)})
dramatiq.set_broker(broker)
logger = logging.getLogger("examples.dispatch")


# dispatch_method="sync": send() returns once Kafka has the record (or raises).
@dramatiq.actor(queue_name="orders", dispatch_method="sync", sync_timeout=5)
def charge(order_id: int) -> None:
    logger.warning("charged order %d", order_id)


# partition_key: jobs of one customer share a partition, run in order, never two at once.
@dramatiq.actor(queue_name="orders", partition_key=lambda customer, step: customer)
def fulfil(customer: str, step: int) -> None:
    logger.warning("customer %s: step %d", customer, step)


# dispatch_many_method="sync": send_many() waits for every record and names each failure.
@dramatiq.actor(queue_name="orders", dispatch_many_method="sync")
def notify(user_id: int) -> None:
    logger.warning("notified user %d", user_id)
