"""What the consumers and the producer report as it happens, for metrics.

The hot paths call one method of :data:`EVENTS` each; nothing is counted
here.  Listeners (``dramatiq_kafka.metrics.KafkaMetrics``) subscribe and
keep their own figures, so this module needs no optional dependency and
costs a loop over an empty list when nobody listens.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Listener(Protocol):
    """Receives the broker's events.  Called from worker, consumer and
    delivery-report threads: implementations must be thread-safe and fast."""

    def retried(self, queue_name: str) -> None: ...

    def dead_lettered(self, queue_name: str, topic: str) -> None: ...

    def delivery_failed(self, topic: str) -> None: ...

    def paused(self, queue_name: str, partitions: int) -> None: ...


class Events:
    """Fans the broker's events out to the subscribed listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = tuple(known for known in self._listeners if known is not listener)

    def retried(self, queue_name: str) -> None:
        """A failed job of ``queue_name`` waits for its retry."""
        for listener in self._listeners:
            listener.retried(queue_name)

    def dead_lettered(self, queue_name: str, topic: str) -> None:
        """Kafka acknowledged a dead letter of ``queue_name`` in ``topic``."""
        for listener in self._listeners:
            listener.dead_lettered(queue_name, topic)

    def delivery_failed(self, topic: str) -> None:
        """Kafka did not take a record sent to ``topic``."""
        for listener in self._listeners:
            listener.delivery_failed(topic)

    def paused(self, queue_name: str, partitions: int) -> None:
        """How many partitions of ``queue_name``'s consumer in this process
        are paused now."""
        for listener in self._listeners:
            listener.paused(queue_name, partitions)


#: The process's events; the consumers and the producer report here.
EVENTS = Events()
