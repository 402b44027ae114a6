"""Delayed jobs and non-blocking retries.

Run a worker with ``dramatiq examples.delays.tasks`` and enqueue with
``python -m examples.delays.enqueue``.  Delayed jobs wait in the topic
``reminders.DQ`` until due; the worker keeps a bounded number of them in
memory (``delay_buffer`` per partition).  The queue retries a failed job by
sending it again with its backoff as a delay (``retry_mode="requeue"``), so
a job that keeps failing never holds up the jobs behind it.
"""

from __future__ import annotations

import logging
import time

import dramatiq

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig

broker = KafkaBroker(
    group_id="delays-example",
    queues={
        "reminders": QueueConfig(
            partitions=3, retry_mode="requeue", min_backoff=500, dead_letter=DeadLetter(max_retries=2)
        )
    },
)
dramatiq.set_broker(broker)

logger = logging.getLogger("examples.delays")


@dramatiq.actor(queue_name="reminders")
def remind(who: str, due: float) -> None:
    logger.warning("Reminding %s, %.2fs after it was due.", who, time.time() - due)


@dramatiq.actor(queue_name="reminders")
def flaky_webhook(url: str) -> None:
    raise ConnectionError(f"{url} is down")  # retried at 0.5 s, 1 s, then dead-lettered
