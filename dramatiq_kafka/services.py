"""What a queue's consumer needs done outside itself, and the broker's way of doing it.

A consumer sends nothing through the broker and knows none of its fields: it
asks :class:`QueueServices` to send a failed job again (``retry_mode="requeue"``)
and tells it of each dead letter.  :class:`BrokerServices` is the broker's:
a requeue is an ordinary delayed enqueue, a dead letter is remembered for
``join(fail_fast=True)`` and starts the message's ``on_retry_exhausted`` actor.
"""

from __future__ import annotations

from typing import Any, Protocol

from dramatiq.actor import Actor
from dramatiq.common import q_name
from dramatiq.message import Message

from .errors import JobFailure
from .partitions import KafkaMessageProxy
from .retry_policy import RetryPolicy

__all__ = ["MAX_REMEMBERED_FAILURES", "BrokerServices", "QueueServices", "ServedBroker"]

#: Dead-lettered errors kept per queue for ``join(fail_fast=True)``.
MAX_REMEMBERED_FAILURES = 100


class QueueServices(Protocol):
    """What a consumer asks of its broker."""

    def requeue(self, message: KafkaMessageProxy, delay: int) -> None:
        """Send a failed job again, to run after ``delay`` ms.

        Raises:
          Exception: When it could not be sent (the job is then retried in place;
            in a share queue, sent again after a backoff).
        """

    def dead_lettered(self, message: KafkaMessageProxy, exhausted: bool) -> None:
        """``message`` was dead-lettered; ``exhausted``: it used up its retries."""


class ServedBroker(Protocol):
    """What :class:`BrokerServices` uses of the broker (a ``KafkaBroker``)."""

    failures_by_queue: dict[str, list[JobFailure]]

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]: ...

    def get_actor(self, actor_name: str) -> Actor[Any, Any]: ...

    def retry_policy(self, message: KafkaMessageProxy) -> RetryPolicy: ...


class BrokerServices:
    """The broker's :class:`QueueServices`.

    Parameters:
      broker(KafkaBroker): Sends the requeued jobs, keeps the dead-lettered
        errors (``failures_by_queue``) and names the ``on_retry_exhausted``
        actor (its retry policy); asked at each call.
    """

    def __init__(self, broker: ServedBroker) -> None:
        self.broker = broker

    def requeue(self, message: KafkaMessageProxy, delay: int) -> None:
        self.broker.enqueue(message.copy(options={"retries": message.failures}), delay=delay)

    def dead_lettered(self, message: KafkaMessageProxy, exhausted: bool) -> None:
        errors = self.broker.failures_by_queue.setdefault(q_name(message.queue_name), [])
        if len(errors) < MAX_REMEMBERED_FAILURES:
            # Only the first is raised; none keeps its traceback's frames alive.
            errors.append(JobFailure.of(getattr(message, "_exception", None), message.message_id))
        if exhausted and message.failures:
            policy = self.broker.retry_policy(message)
            if policy.on_exhausted:
                retries = {"retries": message.failures - 1, "max_retries": policy.max_retries}
                self.broker.get_actor(policy.on_exhausted).send(message.asdict(), retries)
