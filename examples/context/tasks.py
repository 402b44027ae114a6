"""Request context in jobs: the tenant, user and request id of whoever enqueued them.

Run a worker with ``dramatiq examples.context.tasks`` and enqueue with
``python -m examples.context.enqueue``.  Kafka is found through
``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` (default ``localhost:9092``).
"""

from __future__ import annotations

import contextvars
import logging

import dramatiq

from dramatiq_kafka import CurrentAttributes, CurrentContext, KafkaBroker, QueueConfig


class Current(CurrentAttributes):
    """Who is asking: set where a request comes in, seen by the jobs it enqueues."""

    tenant: str | None = None
    user_id: int | None = None


#: A plain ContextVar is carried too (say, one your logging already uses).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

broker = KafkaBroker(group_id="context-example", queues={"context": QueueConfig(partitions=3)})
broker.add_middleware(CurrentContext(Current, request_id))
dramatiq.set_broker(broker)

logger = logging.getLogger("examples.context")


def who() -> str:
    return f"[request {request_id.get()} tenant={Current.tenant} user={Current.user_id}]"


@dramatiq.actor(queue_name="context")
def create_invoice(order_id: int) -> None:
    logger.warning("%s invoice for order %d", who(), order_id)
    email_invoice.send(order_id)  # enqueued from a job: carries the same values


@dramatiq.actor(queue_name="context")
def email_invoice(order_id: int) -> None:
    logger.warning("%s e-mail for order %d", who(), order_id)
