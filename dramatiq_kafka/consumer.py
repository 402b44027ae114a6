"""The Dramatiq consumer of one queue's topic.

The thread that iterates it (Dramatiq's ``ConsumerThread``) polls Kafka on
every call, whatever the jobs are doing: the group membership never depends
on how long a job runs.  The prefetch limit is a brake applied with
``pause()``/``resume()``, never by not polling.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import DecodeError
from dramatiq.logging import get_logger
from dramatiq.message import Message

from .dead_letters import DeadLetterWriter
from .errors import DeliveryError, KafkaConnectionError
from .offsets import PartitionOffsets
from .producer import KafkaProducer
from .wire import decode_message

#: Settings every worker consumer gets; the user's config may override them.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # Bounds the records librdkafka keeps fetched ahead (default 64 MiB).
    "queued.max.messages.kbytes": 16384,
}

#: Classic-protocol defaults; the KIP-848 protocol (``group.protocol=consumer``)
#: refuses them: the broker assigns and paces the group there.
CLASSIC_GROUP_DEFAULTS: dict[str, Any] = {
    "partition.assignment.strategy": "cooperative-sticky",
    # Members learn of a rebalance at their next heartbeat (default 3 s).
    "heartbeat.interval.ms": 1000,
}

#: The longest a single poll blocks, so commits stay timely while idle.
POLL_SLICE = 0.1
#: The most records fetched by one poll.
POLL_BATCH = 500


class KafkaMessageProxy(MessageProxy):
    """A message together with the record it was read from.

    Attributes:
      record: The Kafka record (topic, partition, offset, key, headers).
    """

    def __init__(self, message: Message[Any], record: KafkaRecord, offsets: PartitionOffsets) -> None:
        super().__init__(message)
        self.record = record
        self._offsets = offsets

    @property
    def partition(self) -> int:
        return int(self.record.partition() or 0)

    @property
    def offset(self) -> int:
        return int(self.record.offset() or 0)


class KafkaConsumer(Consumer):
    """Consumes one topic as a member of the workers' consumer group.

    Parameters:
      queue_name(str): The Dramatiq queue (what ``message.queue_name`` says).
      topic(str): The topic behind it.
      config(dict): librdkafka consumer settings, ``group.id`` included.
      prefetch(int): The most jobs handed out and not yet acked.  Up to
        ``max(2 * prefetch, 500)`` more records are kept fetched, ready.
      timeout(int): Milliseconds ``__next__`` waits before returning ``None``.
      producer(KafkaProducer): The process's producer: an ack waits until
        the records its job enqueued are in Kafka.
      dead_letters(DeadLetterWriter): Writes records that are nacked or
        cannot be decoded.
      dead_letter_topic(str): The topic they go to.
      settle_timeout(float): Seconds an ack waits for those records.
      commit_interval(float): Seconds between asynchronous commits.
      commit_every(int): Commit sooner once this many jobs finished, so a
        crash repeats at most this many finished jobs (plus those that
        finished behind a job still running).
      on_dead_letter(callable): Called with each nacked message.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        topic: str,
        config: dict[str, Any],
        prefetch: int,
        timeout: int,
        producer: KafkaProducer,
        dead_letters: DeadLetterWriter,
        dead_letter_topic: str,
        settle_timeout: float = 10.0,
        commit_interval: float = 0.5,
        commit_every: int = 100,
        on_dead_letter: Callable[[MessageProxy], None] | None = None,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topic = topic
        self.group_id = str(config["group.id"])
        self.prefetch = max(prefetch, 1)
        self.buffer_high = max(2 * self.prefetch, POLL_BATCH)
        self.timeout = timeout / 1000
        self.producer = producer
        self.settle_timeout = settle_timeout
        self.dead_letters = dead_letters
        self.dead_letter_topic = dead_letter_topic
        self.commit_interval = commit_interval
        self.commit_every = commit_every
        self._finished_since_commit = 0
        self.on_dead_letter = on_dead_letter

        # Guards the partition table: acks arrive from every worker thread,
        # rebalance callbacks run on the polling thread.
        self._lock = threading.Lock()
        self._partitions: dict[int, PartitionOffsets] = {}
        self._fetched: deque[KafkaRecord] = deque()
        self._braked = False
        self._assignment_changed = False
        self._room = threading.Condition()
        self._next_commit = time.monotonic() + commit_interval
        self._closed = False

        defaults = dict(CONSUMER_DEFAULTS)
        if config.get("group.protocol", "classic") == "classic":
            defaults.update(CLASSIC_GROUP_DEFAULTS)
        self._consumer = ConfluentConsumer({**defaults, **config, "on_commit": self._on_commit})
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    # -- rebalance -----------------------------------------------------------------------------------

    def _on_assign(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        self.logger.info(
            "Assigned partitions %s of %r.", sorted(tp.partition for tp in partitions), self.topic
        )
        with self._lock:
            for tp in partitions:
                self._partitions[tp.partition] = PartitionOffsets()
        # New partitions arrive unpaused: the next brake check pauses them
        # too when the buffer is still full.
        self._assignment_changed = True

    def _on_revoke(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        self.logger.info(
            "Partitions %s of %r revoked.", sorted(tp.partition for tp in partitions), self.topic
        )
        self._commit([tp.partition for tp in partitions], asynchronous=False)
        self._forget(partitions)

    def _on_lost(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: another member may already own
        # these partitions, so committing now could skip its work.
        self.logger.warning(
            "Partitions %s of %r lost.", sorted(tp.partition for tp in partitions), self.topic
        )
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        with self._lock:
            for partition in lost:
                self._partitions.pop(partition, None)
            self._fetched = deque(record for record in self._fetched if record.partition() not in lost)

    # -- committing ----------------------------------------------------------------------------------

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self.logger.warning("Offset commit failed (will retry): %s", error)
            return
        with self._lock:
            for tp in partitions:
                offsets = self._partitions.get(tp.partition)
                if tp.error is None and offsets is not None:
                    offsets.committed(tp.offset)

    def _commit(self, partitions: Iterable[int] | None = None, *, asynchronous: bool = True) -> None:
        with self._lock:
            chosen = (
                self._partitions
                if partitions is None
                else {p: self._partitions[p] for p in partitions if p in self._partitions}
            )
            candidates = []
            for partition, offsets in chosen.items():
                watermark = offsets.commit_candidate()
                if watermark is not None:
                    candidates.append(TopicPartition(self.topic, partition, watermark))
        if not candidates:
            return
        try:
            if asynchronous:
                self._consumer.commit(offsets=candidates, asynchronous=True)
            else:
                committed = self._consumer.commit(offsets=candidates, asynchronous=False) or []
                self._on_commit(None, committed)
        except KafkaException as e:
            self.logger.warning("Offset commit failed: %s", e.args[0])

    # -- flow control --------------------------------------------------------------------------------

    def _apply_brake(self) -> None:
        # Fetching is paused on a high mark and resumed on a low one.  The
        # buffer only grows past its low mark while no job can start (every
        # slot held by long jobs) and polling goes on regardless.
        buffered = len(self._fetched)
        if buffered >= self.buffer_high and (not self._braked or self._assignment_changed):
            self._consumer.pause(self._consumer.assignment())
            self._braked = True
            self._assignment_changed = False
        elif self._braked and buffered <= self.buffer_high // 2:
            self._consumer.resume(self._consumer.assignment())
            self._braked = False

    def _has_room(self) -> bool:
        return sum(offsets.unfinished for offsets in self._partitions.values()) < self.prefetch

    # -- the iterator --------------------------------------------------------------------------------

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            if now >= self._next_commit or self._finished_since_commit >= self.commit_every:
                self._finished_since_commit = 0
                self._commit()
                self._next_commit = now + self.commit_interval
            proxy = self._hand_out()
            if proxy is not None:
                return proxy
            if now >= deadline:
                return None
            self._apply_brake()
            wait = min(POLL_SLICE, deadline - now)
            if self._fetched:
                # Full: wait for an ack, but keep polling so that the group
                # and librdkafka's fetcher never wait on us.  Checking for room
                # under the condition's lock is what makes a wake-up unmissable.
                with self._room:
                    if not self._has_room():
                        self._room.wait(wait)
                wait = 0
            # Take only what keeps the buffer under its low mark: records left
            # in librdkafka's queue cost nothing, while pausing to shed them
            # costs a fetch round (up to fetch.wait.max.ms) on resume.
            wanted = min(POLL_BATCH, max(1, self.buffer_high // 2 - len(self._fetched)))
            for record in self._consumer.consume(wanted, wait):
                self._accept(record)

    def _accept(self, record: KafkaRecord) -> None:
        error = record.error()
        if error is None:
            with self._lock:
                if record.partition() in self._partitions:
                    self._fetched.append(record)
            return
        if error.fatal() or error.code() in (
            KafkaError._AUTHENTICATION,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            raise KafkaConnectionError(f"Consumer of {self.topic!r} failed: {error.str()}")
        self.logger.warning("Consumer of %r: %s", self.topic, error.str())

    def _hand_out(self) -> MessageProxy | None:
        """Turn the next fetched record into a message, when a job may start."""
        while True:
            with self._lock:
                if not self._fetched or not self._has_room():
                    return None
                record = self._fetched.popleft()
                offsets = self._partitions.get(record.partition() or 0)
                if offsets is None:
                    continue
                offsets.track(record.offset() or 0)
            try:
                message = decode_message(record.value(), self.queue_name)
            except DecodeError as e:
                self.logger.error(
                    "Record %s/%s@%s cannot be decoded (%s); moving it to %r.",
                    record.topic(),
                    record.partition(),
                    record.offset(),
                    e,
                    self.dead_letter_topic,
                )
                self._dead_letter(record, offsets, message_id="", attempts=0, reason=str(e))
                continue
            return KafkaMessageProxy(message, record, offsets)

    # -- acks ----------------------------------------------------------------------------------------

    def _owns(self, proxy: KafkaMessageProxy) -> bool:
        with self._lock:
            return not self._closed and self._partitions.get(proxy.partition) is proxy._offsets

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, KafkaMessageProxy)
        if not self.producer.settle_thread_sends(self.settle_timeout):
            # A retry or follow-up job this job enqueued is not in Kafka:
            # committing now could lose it.  Left unfinished, the job runs
            # again after a restart.
            self.logger.error(
                "Messages enqueued by %s were not acknowledged by Kafka; its offset stays uncommitted.",
                message.message_id,
            )
            return
        if self._owns(message):
            self._finish(message._offsets, message.offset)
        else:
            self.logger.debug("Ignoring ack of %s: its partition is no longer ours.", message.message_id)

    def nack(self, message: MessageProxy) -> None:
        assert isinstance(message, KafkaMessageProxy)
        self.producer.settle_thread_sends(self.settle_timeout)
        if not self._owns(message):
            self.logger.debug("Ignoring nack of %s: its partition is no longer ours.", message.message_id)
            return
        if self.on_dead_letter is not None:
            self.on_dead_letter(message)
        self._dead_letter(
            message.record,
            message._offsets,
            message_id=message.message_id,
            # Dramatiq counts failed runs in "retries", the last one included.
            attempts=message.options.get("retries", 0),
            error=message._exception,
        )

    def _dead_letter(
        self,
        record: KafkaRecord,
        offsets: PartitionOffsets,
        *,
        message_id: str,
        attempts: int,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        offset = record.offset() or 0
        self.dead_letters.write(
            self.dead_letter_topic,
            record,
            message_id=message_id,
            attempts=attempts,
            error=error,
            reason=reason,
            on_written=lambda: self._finish(offsets, offset),
        )

    def _finish(self, offsets: PartitionOffsets, offset: int) -> None:
        offsets.mark_done(offset)
        with self._room:
            self._finished_since_commit += 1
            self._room.notify()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        # Nothing to send back: unfinished offsets are never committed,
        # so Kafka hands these records out again after a restart.
        pass

    def close(self) -> None:
        """Commit what is finished, synchronously, and leave the group."""
        try:
            # Dead letters still in flight finish their offsets when delivered.
            self.producer.flush(self.settle_timeout)
        except DeliveryError as e:
            self.logger.error("%s", e)
        try:
            self._commit(asynchronous=False)
        finally:
            with self._lock:
                self._closed = True
                self._partitions.clear()
                self._fetched.clear()
            self._consumer.close()
