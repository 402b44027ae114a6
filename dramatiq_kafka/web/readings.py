"""What the dashboard reads from Kafka, cached for a few seconds.

:class:`Dashboard` reads the queues' lag (one batched request for the overview), the
workers' status records and who holds each partition.  Rendering is ``pages.py``;
the dead letters are read by ``dead_letters.py`` through ``dramatiq_kafka.dead_letters``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.logging import get_logger

from ..admin import MemberDescription, PartitionLag, TopicAdmin
from ..broker import KafkaBroker
from ..status import read_status
from .history import QueueHistory, QueueSample


class Dashboard:
    """The dashboard's data, read from Kafka and cached for ``cache_seconds``.

    Parameters:
      broker(KafkaBroker): The broker whose queues, group and prefix are shown.
      cache_seconds(float): How long a reading of Kafka is reused.
    """

    def __init__(self, broker: KafkaBroker, *, cache_seconds: float = 2.0) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.cache_seconds = cache_seconds
        #: Each queue's lag and offsets over the last hour, from every reading of them.
        self.history = QueueHistory()
        self.admin = TopicAdmin(broker.client_config, broker.group_id, timeout=broker.request_timeout)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _cached(self, name: str, read: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
        value = read()
        with self._lock:
            self._cache[name] = (time.monotonic(), value)
        return value

    def topics(self) -> list[str]:
        """Every topic a page may show: the queues', their delay and dead-letter topics."""
        topics: list[str] = []
        for queue in sorted(self.broker.get_declared_queues()):
            topics += self.broker.topology.topics(queue)
        return topics

    def all_lags(self) -> dict[str, list[PartitionLag]]:
        """Every topic's lag, in one batched reading (the overview); each reading
        is a sample of the queues' history."""
        return dict(self._cached("lags", self._read_lags))

    def _read_lags(self) -> dict[str, list[PartitionLag]]:
        lags = self.admin.lags(self.topics())
        now = time.time()
        for queue in self.broker.get_declared_queues():
            partitions = lags.get(self.broker.topic_name(queue)) or []
            self.history.add(
                queue,
                QueueSample(
                    at=now,
                    end=sum(p.end for p in partitions),
                    committed=sum(max(p.committed, p.low) for p in partitions),
                    lag=sum(p.lag for p in partitions),
                ),
            )
        return lags

    def sample(self) -> None:
        """Read every queue's lag now (the sampler's task), whatever the cache."""
        lags = self._read_lags()
        with self._lock:
            self._cache["lags"] = (time.monotonic(), lags)

    def lag(self, topic: str) -> list[PartitionLag]:
        """One topic's lag (a queue's page)."""
        return list(self._cached(f"lag:{topic}", lambda: self.admin.lags([topic])[topic]))

    def workers(self) -> dict[str, dict[str, Any]]:
        return dict(
            self._cached("status", lambda: read_status(self.broker.client_config, self.broker.topic_prefix))
        )

    def group_members(self) -> list[MemberDescription]:
        """The workers' group as Kafka describes it."""
        return list(self._cached("members", self.admin.group_members))

    def partition_owners(self) -> dict[tuple[str, int], tuple[str, dict[str, Any]]]:
        """Per (topic, partition), the process that reports it and what it says."""
        owners = {}
        for key, status in self.workers().items():
            for queue in status.get("queues", []):
                for partition in queue.get("partitions", []):
                    owners[(queue["topic"], partition["partition"])] = (key, partition)
        return owners

    def queue_rows(self) -> list[dict[str, Any]]:
        owners = self.partition_owners()
        lags = self.all_lags()
        rows = []
        for queue in sorted(self.broker.get_declared_queues()):
            topic, delay_topic, dead_letter_topic = self.broker.topology.topics(queue)
            partitions = lags.get(topic) or []
            delayed = lags.get(delay_topic) or []
            dead = lags.get(dead_letter_topic) or []
            # A share group commits no offsets: its progress is not the group's lag.
            shared = self.broker.share_group_of(queue) is not None
            rows.append(
                {
                    "queue": queue,
                    "partitions": len(partitions),
                    "end": sum(p.end for p in partitions),
                    "lag": "-" if shared else sum(p.lag for p in partitions),
                    "paused": sum(
                        1 for p in partitions if owners.get((topic, p.partition), ("", {}))[1].get("paused")
                    ),
                    "dead_letters": sum(p.end - p.low for p in dead),
                    "delayed": sum(p.lag for p in delayed),
                    "rates": None if shared else self.history.rates(queue),
                    "trend": [] if shared else [(s.at, float(s.lag)) for s in self.history.samples(queue)],
                }
            )
        return rows

    def close(self) -> None:
        self.admin.close()
