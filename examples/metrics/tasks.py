"""Prometheus metrics: Dramatiq's own middleware, unchanged, and the broker's.

Run a worker with ``dramatiq examples.metrics.tasks`` and read
http://127.0.0.1:9191/metrics (Dramatiq's ``dramatiq_prom_host`` and
``dramatiq_prom_port`` variables move it); enqueue with
``python -m examples.metrics.enqueue``.  Needs ``pip install 'dramatiq-kafka-broker[metrics]'``.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware.prometheus import Prometheus

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.metrics import KafkaMetrics

broker = KafkaBroker(
    group_id="metrics-example",
    queues={
        "metrics": QueueConfig(
            partitions=3, min_backoff=100, max_backoff=100, dead_letter=DeadLetter(max_retries=1)
        )
    },
)
broker.add_middleware(Prometheus())  # dramatiq_messages_total, durations... served on :9191
broker.add_middleware(KafkaMetrics(lag_interval=1))  # lag, paused partitions, retries, dead letters
dramatiq.set_broker(broker)

logger = logging.getLogger("examples.metrics")


@dramatiq.actor(queue_name="metrics")
def greet(name: str) -> None:
    logger.warning("hello, %s", name)


@dramatiq.actor(queue_name="metrics")
def flaky() -> None:
    raise RuntimeError("always fails: retried once in place, then dead-lettered")
