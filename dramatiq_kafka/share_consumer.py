"""The Dramatiq consumer of a queue consumed through a Kafka share group (KIP-932).

Every worker process of a share queue fetches from every partition: Kafka lends each
record to one consumer at a time and counts its deliveries.  A record is acknowledged by
itself once its job is over: ACCEPT after the job succeeded (and Kafka has what it
enqueued), after its retry's copy was sent, or after its dead letter was written;
RELEASE (or a copy, see ``share_records.py``) for what was fetched and never started.
Retries are always copies sent through the delay topic with the backoff (the record's
lock is too short to hold it for a backoff, and a RELEASE comes back at once).

confluent-kafka's ``ShareConsumer`` is not thread-safe: only the thread iterating this
consumer (Dramatiq's ``ConsumerThread``), and ``close`` once that thread is gone, call
it.  Worker threads and delivery reports only decide acknowledgements, which that thread
hands to Kafka.  What may start, be given back or dead-lettered is decided by the
Kafka-free :class:`~dramatiq_kafka.share_records.ShareRecords`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import AcknowledgeType, KafkaException
from confluent_kafka import Message as KafkaRecord
from confluent_kafka import ShareConsumer as ConfluentShareConsumer
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import DecodeError
from dramatiq.logging import get_logger

from .client_log import with_log
from .dead_letters import DeadLetterWriter
from .errors import KafkaBrokerError
from .middleware.revocation import worker_stopping
from .partitions import ShareMessageProxy
from .producer import KafkaProducer
from .services import QueueServices
from .share_records import Acknowledge, Delivery, DeliveryState, ShareRecords, Verdict
from .share_settling import ShareSettling
from .topology import Topology
from .wire import decode_message

__all__ = ["ShareQueueConsumer"]

#: Seconds between two sends of acknowledgements while a batch is in progress; a poll
#: sends them otherwise.
ACKNOWLEDGE_EVERY = 0.05
#: The longest wait for a job's end before the consumer looks again.
WAIT_SLICE = 0.1
#: Seconds before fetching again after a fetch failed.
POLL_BACKOFF = 0.5
KAFKA_ACKNOWLEDGEMENTS = {
    Acknowledge.ACCEPT: AcknowledgeType.ACCEPT,
    Acknowledge.RELEASE: AcknowledgeType.RELEASE,
}


class ShareQueueConsumer(ShareSettling, Consumer):
    """Consumes one queue's topic as a member of a share group.

    Parameters:
      queue_name(str): The Dramatiq queue.
      topology(Topology): The broker's queues (topics, retry policies, refusals).
      config(dict): The share consumer's librdkafka settings (``group.id`` set).
      prefetch(int): The most jobs handed to the worker and not yet ended.
      timeout(int): Milliseconds ``__next__`` waits before returning ``None``.
      producer(KafkaProducer): The process's producer: retries' copies, the jobs'
        own sends (a job is finished only once Kafka has them).
      dead_letters(DeadLetterWriter): Writes records that fail for good or cannot
        be decoded.
      services(QueueServices): Sends a failed job again and hears of dead letters.
      lock_seconds(float): The share group's record lock.
      delivery_limit(int): The share group's ``share.delivery.count.limit``.
      settle_timeout(float): Seconds ``close`` waits for running jobs' ends and
        writes still in flight.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        topology: Topology,
        config: dict[str, Any],
        prefetch: int,
        timeout: int,
        producer: KafkaProducer,
        dead_letters: DeadLetterWriter,
        services: QueueServices,
        lock_seconds: float,
        delivery_limit: int,
        settle_timeout: float = 10.0,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topology = topology
        self.topic = topology.topic_name(queue_name)
        self.dead_letter_topic = topology.topics(queue_name).dead_letters
        self.timeout = timeout / 1000
        self.producer = producer
        self.dead_letters = dead_letters
        self.services = services
        self.settle_timeout = settle_timeout
        self.group_id = str(config["group.id"])
        self.records = ShareRecords(limit=prefetch, lock_seconds=lock_seconds, delivery_limit=delivery_limit)
        self.lock = threading.Condition()
        self._later: list[tuple[float, Callable[[], None]]] = []
        self._acknowledged_at = 0.0
        self._unsent = False
        self.closed = False
        settings = {**config, "max.poll.records": max(prefetch, 1), "share.acknowledgement.mode": "explicit"}
        self.client = ConfluentShareConsumer(with_log(settings, f"share consumer of {queue_name}"))
        self.client.subscribe([self.topic])

    # -- the iterator (the consumer's own thread) ---------------------------------------------------

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            self._run_due_writes(now)
            with self.lock:
                if worker_stopping() and not self.records.closing:
                    # Records handed out now would never start: give them back at once.
                    self.records.close()
                self._log_let_go(self.records.let_go(now))
            proxy = self._next_job(now)
            if proxy is not None:
                return proxy
            with self.lock:
                # All decided: no acknowledgement can come before the next poll.
                decided = all(d.state is DeliveryState.ACKNOWLEDGED for d in self.records.batch)
                polling = decided and not self.records.closing
            self._hand_over(now, commit=not polling)
            if polling:
                if self._poll(max(0.0, min(deadline - now, 0.5))):
                    continue
            else:
                self._warn_overdue(now)
                with self.lock:
                    self.lock.wait(max(0.0, min(WAIT_SLICE, deadline - now)))
            if time.monotonic() >= deadline:
                return None

    def _log_let_go(self, gone: list[Delivery]) -> None:
        for delivery in gone:
            self.logger.error(
                "Record %s/%d@%d could not be settled within its record lock (see the errors above); "
                "Kafka has taken it back and delivers it again.",
                self.topic,
                delivery.partition,
                delivery.offset,
            )

    def _next_job(self, now: float) -> MessageProxy | None:
        """The next record that may run, carrying out the fate of those that may not."""
        while True:
            with self.lock:
                found = self.records.next(now)
            if found is None:
                return None
            delivery, verdict = found
            if verdict is Verdict.RUN:
                proxy = self._job_of(delivery)
                if proxy is not None:
                    return proxy
            elif verdict is Verdict.COPY:
                self._copy(delivery)
            elif verdict is Verdict.DEAD_LETTER:
                self.logger.error(
                    "Record %s/%d@%d was delivered %d times without being acknowledged (the share "
                    "group's share.delivery.count.limit): the workers running it were killed, or it "
                    "ran past its record lock each time. Moving it to %r unrun; one more delivery "
                    "would let Kafka drop it.",
                    self.topic,
                    delivery.partition,
                    delivery.offset,
                    delivery.count,
                    self.dead_letter_topic,
                )
                reason = f"delivered {delivery.count} times without an acknowledgement"
                self._dead_letter(delivery, message_id="", attempts=delivery.count, error=None, reason=reason)

    def _job_of(self, delivery: Delivery) -> ShareMessageProxy | None:
        record: KafkaRecord = delivery.record
        try:
            message = decode_message(record.value(), self.queue_name)
            refusal = self.topology.refusal(message)
            if refusal is not None:
                raise DecodeError(refusal, record.value(), None)
        except DecodeError as e:
            with self.lock:
                self.records.ended(delivery)
            self.logger.error(
                "Record %s/%d@%d is no job (%s); moving it to %r.",
                self.topic,
                delivery.partition,
                delivery.offset,
                e,
                self.dead_letter_topic,
            )
            self._dead_letter(delivery, message_id="", attempts=0, error=e, reason=None)
            return None
        delivery.failures = int(message.options.get("retries", 0) or 0)
        return ShareMessageProxy(message, record, delivery, self)

    def _poll(self, timeout: float) -> bool:
        """Fetch the next batch (which also sends the last one's acknowledgements)."""
        try:
            polled = self.client.poll(timeout)
        except KafkaException as e:
            self.logger.warning("Fetching %r failed: %s", self.topic, e)
            time.sleep(min(timeout, POLL_BACKOFF))
            return False
        except RuntimeError as e:  # IllegalStateException: an acknowledgement never reached it
            raise KafkaBrokerError(
                f"The share consumer of {self.topic!r} refuses to fetch ({e}); Dramatiq makes it anew."
            ) from None
        now = time.monotonic()
        self._unsent = False
        deliveries = []
        for record in polled:
            error = record.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                self.logger.debug("Fetching %r: %s", self.topic, error)
                continue
            count = record.delivery_count() or 1
            deliveries.append(Delivery(record.partition() or 0, record.offset() or 0, count, now, record))
        with self.lock:
            self.records.fetched(deliveries)
        return bool(deliveries)

    def _hand_over(self, now: float, *, commit: bool) -> None:
        """Give Kafka the acknowledgements decided since the last call; while a batch is
        in progress (``commit``), send them every :data:`ACKNOWLEDGE_EVERY` rather than
        with the next poll, so that a crash runs as few finished jobs again as can be."""
        with self.lock:
            outgoing = self.records.take_outgoing()
        for delivery, acknowledge in outgoing:
            try:
                self.client.acknowledge(delivery.record, KAFKA_ACKNOWLEDGEMENTS[acknowledge])
                self._unsent = True
            except Exception as e:
                # The client still counts it unacknowledged: its next poll refuses, and
                # the consumer is made anew (see _poll).
                self.logger.error("Could not acknowledge %s: %s", delivery, e)
        if commit and self._unsent and now - self._acknowledged_at >= ACKNOWLEDGE_EVERY:
            self._acknowledged_at = now
            try:
                self.client.commit_async()
                self._unsent = False
            except Exception as e:
                self.logger.warning("Could not send the acknowledgements of %r: %s", self.topic, e)

    def _warn_overdue(self, now: float) -> None:
        with self.lock:
            overdue = self.records.overdue(now)
        for delivery in overdue:
            self.logger.warning(
                "Record %s/%d@%d has run for %.0fs, past its record lock (%.0f ms): Kafka delivers it "
                "again to a consumer of share group %r, which runs it too (delivery %d; at %d "
                "it is dead-lettered). Raise the group's share.record.lock.duration.ms for jobs "
                "this long (docs/share-groups.md).",
                self.topic,
                delivery.partition,
                delivery.offset,
                now - delivery.acquired,
                self.records.lock_seconds * 1000,
                self.group_id,
                delivery.count + 1,
                self.records.delivery_limit,
            )

    # -- shutting down -------------------------------------------------------------------------------

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Messages handed to the worker and never started (it is stopping): given back."""
        for message in messages:
            if isinstance(message, ShareMessageProxy):
                self._give_back(message.delivery)

    def close(self) -> None:
        """Give back what was fetched and not started, wait for the running jobs'
        acknowledgements (``settle_timeout``), hand them to Kafka and leave the group.
        Never raises: Dramatiq's worker would not close its other consumers."""
        if self.closed:
            return
        unsettled = 0
        try:
            with self.lock:
                self.records.close()
            deadline = time.monotonic() + self.settle_timeout
            while True:
                now = time.monotonic()
                self._run_due_writes(now)
                self._next_job(now)  # gives back every waiting record
                self._hand_over(now, commit=False)
                with self.lock:
                    unsettled = self.records.unsettled
                    if (not unsettled and not self.records.outgoing) or now >= deadline:
                        break
                    self.lock.wait(WAIT_SLICE)
            self._hand_over(time.monotonic(), commit=False)
            self.client.commit_sync(self.settle_timeout)
        except Exception as e:
            self.logger.warning("Could not send the last acknowledgements of %r: %s", self.topic, e)
        finally:
            self.closed = True
            if unsettled:
                self.logger.warning(
                    "Closed %r with %d job(s) unsettled: Kafka delivers their records again after "
                    "their lock.",
                    self.topic,
                    unsettled,
                )
            try:
                self.client.close()
            except Exception as e:
                self.logger.warning("Closing the share consumer of %r: %s", self.topic, e)
