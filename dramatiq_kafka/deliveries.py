"""What the producer keeps about the records it sent: failed reports, a thread's sends.

:class:`ThreadSends` counts the sends of one thread until their delivery
reports came, so a job is finished only once Kafka has what it enqueued;
:class:`DeliveryReports` remembers the failures of asynchronous sends for
``flush()`` to raise; :class:`OutgoingRecord` is one record to send, and
:func:`failure_reason` says in words why one was not delivered.  The
producer itself, which sends and serves the reports, is ``producer.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from .wire import Headers

__all__ = [
    "DEFAULT_MESSAGE_MAX_BYTES",
    "MAX_REMEMBERED_FAILURES",
    "DeliveryReports",
    "OutgoingRecord",
    "ThreadSends",
    "failure_reason",
    "record_size",
]

#: librdkafka's default ``message.max.bytes``.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000
#: How many failed async deliveries are kept for ``flush()`` to report.
MAX_REMEMBERED_FAILURES = 1000


def record_size(value: bytes | None, key: bytes | None, headers: Headers | None) -> int:
    """The bytes of a record as librdkafka counts them against ``message.max.bytes``."""
    size = len(value or b"") + len(key or b"")
    for name, header in headers or []:
        size += len(name) + len(header or b"")
    return size


def failure_reason(
    error: KafkaError,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    headers: Headers | None,
    *,
    local: bool,
    max_bytes: object,
) -> str:
    """The reason of a failed send, in words for a record too large.

    Parameters:
      local(bool): librdkafka refused it (over the producer's ``max_bytes``),
        not Kafka.
    """
    if error.code() != KafkaError.MSG_SIZE_TOO_LARGE:
        return str(error)
    size = record_size(value, key, headers)
    if local:
        return (
            f"the record is {size} bytes, more than the producer's message.max.bytes ({max_bytes}) "
            f"allows: {error}. Raise it in KafkaBroker(producer_config={{'message.max.bytes': ...}}) "
            f"and the topic's max.message.bytes with it (QueueConfig(topic_config=...) at creation, "
            f"kafka-configs for an existing topic), or send a reference to the data instead"
        )
    # Kafka judges batches: a small record shares the fate of a large one sent with it.
    return (
        f"topic {topic!r} refused the batch of this {size}-byte record as too large "
        f"(see the topic's max.message.bytes): {error}. Raise the topic's max.message.bytes "
        f"(QueueConfig(topic_config=...) at creation, kafka-configs for an existing topic), or "
        f"send a reference to the data instead"
    )


class DeliveryReports:
    """Counts and remembers the failures of asynchronous sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed = 0
        self._failures: list[tuple[str, str]] = []

    def record(self, message_id: str, error: KafkaError | str) -> None:
        with self._lock:
            self.failed += 1
            if len(self._failures) < MAX_REMEMBERED_FAILURES:
                self._failures.append((message_id, str(error)))

    def take(self) -> list[tuple[str, str]]:
        """Return and forget the failures seen since the last call."""
        with self._lock:
            failures, self._failures = self._failures, []
            return failures


@dataclass(slots=True)
class OutgoingRecord:
    """A record to send: where, what, and the message it carries."""

    topic: str
    value: bytes
    message_id: str
    key: bytes | None = None
    headers: Headers | None = None
    #: ``None`` leaves the partition to the key (or spreads keyless records).
    partition: int | None = None


class ThreadSends:
    """The sends one thread made since its last job finished.

    A job that enqueues (Dramatiq's retries, a delayed message handed back
    to its queue, a job sending another) must not be committed before Kafka
    has those records, or a crash in between would lose them.
    """

    def __init__(self, on_report: Callable[[KafkaError | None, Message], None] | None = None) -> None:
        self._on_report = on_report
        # The delivery callback of every plain async send of this thread:
        # one bound method for all of them, where a closure per send cost an
        # allocation that lived until the report (and the GC's time).
        self.callback = self._delivered
        self._settled = threading.Condition()
        # Only the owning thread sends, so ``sent`` needs no lock (it is on
        # every send's path); reports may come from any thread that polls.
        self.sent_count = 0
        self.reported_count = 0
        self.failed = 0
        self._when_settled: Callable[[bool], object] | None = None

    @property
    def pending(self) -> int:
        return self.sent_count - self.reported_count

    def sent(self) -> None:
        self.sent_count += 1

    def reported(self, error: KafkaError | None) -> None:
        callback = None
        with self._settled:
            self.reported_count += 1
            self.failed += error is not None
            if self.reported_count >= self.sent_count:
                self._settled.notify_all()
                callback, self._when_settled = self._when_settled, None
        if callback is not None:
            callback(not self.failed)

    def when_settled(self, callback: Callable[[bool], object]) -> None:
        """Call ``callback(delivered)`` once every send has its report (at
        once if they all have): ``delivered`` tells whether all succeeded.
        The owning thread must have stopped sending through this object."""
        with self._settled:
            if self.reported_count < self.sent_count:
                self._when_settled = callback
                return
        callback(not self.failed)

    def _delivered(self, error: KafkaError | None, record: Message) -> None:
        self.reported(error)
        if self._on_report is not None:
            self._on_report(error, record)

    def wait(self, timeout: float) -> bool:
        """Whether every send was delivered within ``timeout`` seconds."""
        with self._settled:
            self._settled.wait_for(lambda: self.reported_count >= self.sent_count, timeout)
            return self.reported_count >= self.sent_count and not self.failed
