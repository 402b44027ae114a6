"""The consumer of a delay topic: it holds delayed records until due and moves them.

The delay topic's consumer holds a bounded number of records per partition in
memory, sorted by due time, and moves each one to its queue's topic when it is
due; a partition holding ``delay_buffer`` records pauses its fetching until one
leaves.  The delayed record's offset is committed only once Kafka has the
record in the queue's topic, so a crash loses nothing (it may move a job
twice: at least once).  Which messages are delayed and which partition they
go to is ``delays.py``.  See ``docs/delays.md``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import current_millis, q_name
from dramatiq.errors import DecodeError
from dramatiq.logging import get_logger
from dramatiq.message import Message

from .dead_letters import DeadLetterWriter
from .delays import is_eta
from .errors import DeliveryError
from .group import GroupMember
from .partition_state import PartitionSchedule
from .producer import KafkaProducer
from .scheduling import Scheduler
from .topic_partitions import TopicPartitions
from .topology import Topology
from .wire import decode_message, encode_message, headers_of

__all__ = ["DelayConsumer", "DelayPartition", "HeldRecord"]

#: Seconds before a release that Kafka refused is tried again.
RELEASE_RETRY = 1.0


class HeldRecord(NamedTuple):
    """A delayed record waiting in memory until ``eta`` (epoch ms)."""

    eta: int
    offset: int
    record: KafkaRecord
    message: Message[Any]


class DelayPartition(PartitionSchedule):
    """A partition of a delay topic: what it holds besides its offsets.

    Attributes:
      held: Delayed records waiting until they are due, a heap by ``eta``.
      releasing: Due records sent to their queue and not yet acknowledged.
    """

    def __init__(self, partition: int, **options: Any) -> None:
        super().__init__(partition, **options)
        self.held: list[HeldRecord] = []
        self.releasing = 0

    def snapshot(self, now: float) -> dict[str, Any]:
        # How many wait in memory and when (epoch seconds) the first falls due.
        held = {"held": len(self.held), "next_due": self.held[0].eta / 1000 if self.held else None}
        return {**super().snapshot(now), **held}

    def wants_pause(self) -> bool:
        # Releases not yet acknowledged count too: a slow Kafka must not let
        # them pile up in the producer.
        return self.blocked or len(self.held) + self.releasing >= self.buffer_limit


class DelayConsumer(Consumer):
    """Consumes a delay topic and moves each record to its queue's topic when due.

    It hands no message to Dramatiq's worker (``__next__`` always ends in
    ``None``): records are held here, never in the worker's memory, and
    moved by this consumer's own thread.  The moved record keeps its key
    and headers (the carried context among them); its value loses ``eta``.
    Assignment, pauses, commits and dead letters of its partitions are the
    :class:`~dramatiq_kafka.topic_partitions.TopicPartitions` that the
    queue's consumer uses too.

    A long delay holds back the commit of its partition, so the records
    moved since it was written are listed in the commit's metadata (as the
    jobs finished behind a waiting one are by the queue's consumer): the
    next owner (after a restart or a rebalance) skips them instead of
    moving them again.

    Parameters:
      queue_name(str): The delay queue (``q_name(queue_name)`` is its queue).
      topology(Topology): The broker's queues: the topics of both, and
        ``delay_buffer``, the most records held per partition.
      member(GroupMember): The process's Kafka consumer that fetches for it.
      timeout(int): Milliseconds ``__next__`` waits before returning ``None``.
      producer(KafkaProducer): Sends the due records to the queue's topic.
      dead_letters(DeadLetterWriter): Writes records that cannot be decoded.
      settle_timeout(float): Seconds ``close`` waits for dead letters in flight.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        topology: Topology,
        member: GroupMember,
        timeout: int,
        producer: KafkaProducer,
        dead_letters: DeadLetterWriter,
        settle_timeout: float = 10.0,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topic = topology.topic_name(queue_name)
        #: The topic of the queue the delayed jobs belong to.
        self.queue_topic = topology.topic_name(q_name(queue_name))
        self.delay_buffer = topology.queue_config(queue_name).delay_buffer
        self.member = member
        self.timeout = timeout / 1000
        self.producer = producer
        self.settle_timeout = settle_timeout
        # No job of it runs in the worker: the in-flight limit is unused.
        scheduler = Scheduler(limit=1, buffer_limit=self.delay_buffer, schedule_type=DelayPartition)
        self.partitions = TopicPartitions(
            queue_name=queue_name,
            topology=topology,
            scheduler=scheduler,
            member=member,
            dead_letters=dead_letters,
            logger=self.logger,
        )
        member.attach(self)

    def __next__(self) -> MessageProxy | None:
        # Nothing for Dramatiq's worker: due records are moved by this thread.
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            self.partitions.before_turn(now)
            # The next release is on the wall clock (an eta).
            next_release = now + self._release_due() - current_millis() / 1000
            if now >= deadline:
                return None
            self.partitions.idle(now, min(deadline, next_release))

    def ack(self, message: MessageProxy) -> None:
        raise TypeError("A delay consumer hands out no message to acknowledge.")

    nack = ack

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        pass  # it hands out none

    def close(self) -> None:
        """Commit what was moved, synchronously, and stop fetching the delay topic."""
        self.partitions.close(self, self.settle_timeout)

    # -- what the member routes here (its thread) ----------------------------------------------------

    def accept(self, records: list[KafkaRecord]) -> None:
        """Records fetched from the delay topic."""
        # One poll serves every topic of the process: records of a partition past its
        # buffer are not taken, and fetched again once it has room.
        refused: dict[int, int] = {}
        for record in records:
            partition = record.partition() or 0
            if partition not in refused and not self._full(partition):
                self._hold(record)
            else:
                refused.setdefault(partition, record.offset() or 0)
        if refused:
            self.partitions.update_pauses()  # on the member's thread: paused before the seek
            self.member.seek([TopicPartition(self.topic, p, offset) for p, offset in refused.items()])
        self.partitions.wake()

    def _full(self, partition: int) -> bool:
        with self.partitions.lock:
            state = self._delay_partition(partition)
            return state is not None and len(state.held) + state.releasing >= self.delay_buffer

    def _delay_partition(self, partition: int) -> DelayPartition | None:
        state = self.partitions.held.get(partition)
        return state if isinstance(state, DelayPartition) and not state.revoked else None

    def _hold(self, record: KafkaRecord) -> None:
        offset, partition = record.offset() or 0, record.partition() or 0
        with self.partitions.lock:
            state = self._delay_partition(partition)
            if state is None or state.finished_earlier(offset):  # moved by an earlier owner
                return
        try:
            message = decode_message(record.value(), self.queue_name)
        except DecodeError as e:
            key = record.key()
            with self.partitions.lock:
                job = state.adopt(offset, key if isinstance(key, bytes) else None, record)
            if job is not None:
                self.partitions.dead_letter_undecodable(job, e)
            return
        eta = message.options.get("eta")
        if not is_eta(eta):
            self.logger.warning(
                "Delayed message %s has no valid eta (%r): it is due now.", message.message_id, eta
            )
            eta = message.options["eta"] = 0
        with self.partitions.lock:
            state.offsets.track(offset)
            heapq.heappush(state.held, HeldRecord(int(eta), offset, record, message))

    def _release_due(self) -> float:
        """Move every due record to its queue; return when (epoch seconds)
        the next held record falls due."""
        now = current_millis()
        due: list[tuple[DelayPartition, HeldRecord]] = []
        next_due = float("inf")
        with self.partitions.lock:
            for state in self.partitions.held.values():
                assert isinstance(state, DelayPartition)
                while state.held and state.held[0].eta <= now:
                    due.append((state, heapq.heappop(state.held)))
                    state.releasing += 1
                if state.held:
                    next_due = min(next_due, state.held[0].eta / 1000)
        for state, held in due:
            self._release(state, held)
        return next_due

    def _release(self, state: DelayPartition, held: HeldRecord) -> None:
        message = held.message.copy(queue_name=q_name(self.queue_name))
        del message.options["eta"]

        def on_delivery(error: KafkaError | None) -> None:
            if error is None:
                with self.partitions.lock:
                    state.releasing -= 1
                    state.offsets.mark_done(held.offset)
                    self.partitions.finished_since_commit += 1
                    paused = state.paused
                if paused:
                    self.partitions.wake()  # room again: the partition may be resumed
            else:
                self._hold_again(state, held, error)

        try:
            self.producer.send(
                self.queue_topic,
                encode_message(message),
                message_id=message.message_id,
                key=held.record.key(),
                headers=headers_of(held.record),
                on_delivery=on_delivery,
                retried_by_caller=True,
            )
        except DeliveryError as e:
            self._hold_again(state, held, e)

    def _hold_again(self, state: DelayPartition, held: HeldRecord, error: object) -> None:
        """Kafka did not take a due record: hold it a little longer."""
        self.logger.error(
            "Could not move delayed message %s to %r (%s); trying again in %.0fs.",
            held.message.message_id,
            self.queue_topic,
            error,
            RELEASE_RETRY,
        )
        retry = held._replace(eta=current_millis() + int(RELEASE_RETRY * 1000))
        with self.partitions.lock:
            state.releasing -= 1
            heapq.heappush(state.held, retry)
