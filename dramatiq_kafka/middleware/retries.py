"""Retries in place, by partition pause: the options, and what is never retried."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from ..outcomes import ToDeadLetters
from ..partitions import KafkaMessageProxy


class PartitionRetries(Middleware):
    """Takes the place of Dramatiq's ``Retries`` on a ``KafkaBroker``.

    It declares the same actor options (``max_retries``, ``min_backoff``,
    ``max_backoff``, ``retry_when``, ``throws``, ``on_retry_exhausted``);
    the consumer does the
    retrying: a failed job's partition pauses, waits out the backoff and
    runs the same record again, then dead-letters it after its retries.
    An exception listed in ``throws`` is not retried: the job is
    dead-lettered at once.  A failed run's fate is decided here, after the
    job ran and before Dramatiq acks it, so that a job to be dead-lettered
    reaches the rest of Dramatiq as a failed message (``after_nack``:
    ``Results`` stores its failure, ``Callbacks`` run ``on_failure``).
    """

    def __init__(self) -> None:
        # Dramatiq's Retries logs its aborts under its own name: so does this.
        self.logger = get_logger("dramatiq.middleware.retries", "Retries")

    actor_options = {
        "max_retries",
        "min_backoff",
        "max_backoff",
        "retry_when",
        "throws",
        "on_retry_exhausted",
    }

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not isinstance(message, KafkaMessageProxy):
            return
        actor = broker.actors.get(message.actor_name)
        throws = message.options.get("throws") or (actor.options.get("throws") if actor else None)
        if throws and isinstance(exception, throws):
            self.logger.info("Aborting message %r.", message.message_id)
            message.fail()
        elif isinstance(message.decide_failure(exception), ToDeadLetters):
            # Dead-lettered: a failed message to the rest of Dramatiq (Results
            # stores the failure, Callbacks run on_failure, in after_nack).
            message.fail()
