"""Prometheus metrics of the broker itself (``pip install 'dramatiq-kafka-broker[metrics]'``).

Dramatiq's own ``dramatiq.middleware.Prometheus`` counts jobs and their
durations and works unchanged with :class:`~dramatiq_kafka.KafkaBroker`;
:class:`KafkaMetrics` adds what only the broker knows:

=========================================  =======  ==========================================
metric                                     type     labels
=========================================  =======  ==========================================
``dramatiq_kafka_consumer_lag``            gauge    ``queue_name``, ``partition``
``dramatiq_kafka_paused_partitions``       gauge    ``queue_name``
``dramatiq_kafka_retries_total``           counter  ``queue_name``
``dramatiq_kafka_dead_letters_total``      counter  ``queue_name``, ``topic``
``dramatiq_kafka_delivery_errors_total``   counter  ``topic``
=========================================  =======  ==========================================

``prometheus_client`` is imported when the first figure is recorded, not
when this module is: under Dramatiq's ``Prometheus`` middleware it must
see ``PROMETHEUS_MULTIPROC_DIR``, which that middleware sets when a worker
process boots, so that the figures of every worker process are served
together by its exposition server.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from .admin import TopicAdmin
from .broker import KafkaBroker
from .events import EVENTS
from .periodic import Periodic

#: Metric objects per registry: a registry refuses a second metric of a name.
_METRICS: weakref.WeakKeyDictionary[Any, _Metrics] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


class _Metrics:
    def __init__(self, registry: Any) -> None:
        import prometheus_client as prom

        self.lag = prom.Gauge(
            "dramatiq_kafka_consumer_lag",
            "Records of a partition the workers' group has not committed yet.",
            ["queue_name", "partition"],
            registry=registry,
            # Every worker process reads the same group-wide figure.
            multiprocess_mode="livemax",
        )
        self.paused = prom.Gauge(
            "dramatiq_kafka_paused_partitions",
            "Partitions whose fetching is paused (a retry or dead letter pending, a full buffer).",
            ["queue_name"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.retries = prom.Counter(
            "dramatiq_kafka_retries_total",
            "Failed jobs held for a retry in place.",
            ["queue_name"],
            registry=registry,
        )
        self.dead_letters = prom.Counter(
            "dramatiq_kafka_dead_letters_total",
            "Records moved to a dead-letter topic (acknowledged by Kafka).",
            ["queue_name", "topic"],
            registry=registry,
        )
        self.delivery_errors = prom.Counter(
            "dramatiq_kafka_delivery_errors_total",
            "Records Kafka did not acknowledge.",
            ["topic"],
            registry=registry,
        )


class KafkaMetrics(Middleware):
    """Exposes the broker's lag, paused partitions, retries, dead letters
    and delivery errors as Prometheus metrics.

    Add it to the broker (``broker.add_middleware(KafkaMetrics())``), beside
    Dramatiq's ``Prometheus`` middleware to have them served on its port.
    Counters count what happens in this process; lag is read from Kafka
    every ``lag_interval`` seconds by each worker process.

    Parameters:
      registry(CollectorRegistry): Where the metrics are registered.
        Defaults to ``prometheus_client.REGISTRY``.
      lag_interval(float): Seconds between two readings of the lag.
    """

    def __init__(self, *, registry: Any = None, lag_interval: float = 15.0) -> None:
        self.logger = get_logger(__name__, type(self))
        self.registry = registry
        self.lag_interval = lag_interval
        self._metrics: _Metrics | None = None
        self._lock = threading.Lock()
        self._lag_reader = Periodic(
            "dramatiq-kafka-lag",
            lag_interval,
            self.update_lag,
            self.logger,
            "Could not read the consumer lag",
            at_start=True,
        )
        self._admin: TopicAdmin | None = None
        self._broker: KafkaBroker | None = None
        # Subscribed at once: enqueueing processes report delivery errors too.
        EVENTS.subscribe(self)

    @property
    def metrics(self) -> _Metrics:
        """The metric objects, created on first use."""
        metrics = self._metrics
        if metrics is not None:
            return metrics
        with _METRICS_LOCK:
            registry = self.registry
            if registry is None:
                import prometheus_client

                registry = prometheus_client.REGISTRY
            metrics = _METRICS.get(registry)
            if metrics is None:
                metrics = _METRICS[registry] = _Metrics(registry)
            self._metrics = metrics
            return metrics

    # -- events --------------------------------------------------------------------------------------

    def retried(self, queue_name: str) -> None:
        self.metrics.retries.labels(queue_name).inc()

    def dead_lettered(self, queue_name: str, topic: str) -> None:
        self.metrics.dead_letters.labels(queue_name, topic).inc()

    def delivery_failed(self, topic: str) -> None:
        self.metrics.delivery_errors.labels(topic).inc()

    def paused(self, queue_name: str, partitions: int) -> None:
        self.metrics.paused.labels(queue_name).set(partitions)

    # -- lag -----------------------------------------------------------------------------------------

    def update_lag(self, broker: KafkaBroker | None = None) -> dict[str, int]:
        """Read the group's lag on every declared queue (and delay queue)
        now and set the gauges; return the total per queue.

        Parameters:
          broker(KafkaBroker): The broker whose queues are read; defaults
            to the one this middleware was added to when a worker booted.
        """
        broker = broker or self._broker
        if broker is None:
            return {}
        with self._lock:
            if self._admin is None:
                self._admin = TopicAdmin(
                    broker.client_config, broker.group_id, timeout=broker.request_timeout
                )
            admin = self._admin
        totals = {}
        for found in admin.queue_lags(sorted(broker.get_declared_queues()), broker.topology):
            if found.partitions is None:
                continue
            for lag in found.partitions:
                self.metrics.lag.labels(found.name, str(lag.partition)).set(lag.lag)
            totals[found.name] = sum(lag.lag for lag in found.partitions)
        return totals

    # -- worker hooks --------------------------------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if not isinstance(broker, KafkaBroker):
            return
        self._broker = broker
        self._lag_reader.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._lag_reader.stop()
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
