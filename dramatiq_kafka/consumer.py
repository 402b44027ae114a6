"""The Dramatiq consumer of one queue's topic: what a fetched record becomes, a job.

Records come from the process's :class:`~dramatiq_kafka.group.GroupMember`, the one
Kafka consumer that every queue of the process shares: its thread polls Kafka
whatever the jobs are doing, so the group membership never depends on how long a job
runs.  What may start, wait or commit is decided by the Kafka-free
:class:`~dramatiq_kafka.scheduling.Scheduler`, kept with the rest of the partitions'
state (assignment, pauses, commits, dead letters) in
:class:`~dramatiq_kafka.topic_partitions.TopicPartitions`; this module hands out the
jobs it lets start to the thread that iterates the consumer (Dramatiq's
``ConsumerThread``).  Acks, nacks and retries are carried out in ``settling.py``; what
becomes of a failed run is decided in ``outcomes.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import DecodeError
from dramatiq.logging import get_logger

from .dead_letters import DeadLetterWriter
from .group import BUSY_POLL_SLICE, POLL_SLICE, GroupMember
from .partitions import KafkaMessageProxy
from .producer import KafkaProducer
from .scheduling import Scheduler
from .services import QueueServices
from .settling import JobSettling
from .topic_partitions import TopicPartitions
from .topology import Topology
from .wire import decode_message

__all__ = ["KafkaConsumer"]


class KafkaConsumer(JobSettling, Consumer):
    """Consumes one queue's topic as part of the process's member of the workers' group.

    Parameters:
      queue_name(str): The Dramatiq queue (what ``message.queue_name`` says).
      topology(Topology): The broker's queues: this one's topics, settings
        (``ordered``, ``retry_mode``) and retry policies, and which messages
        are no job of it (dead-lettered unrun).
      member(GroupMember): The process's Kafka consumer that fetches for it; the
        consumer attaches itself and detaches on ``close``.
      prefetch(int): The most jobs running or waiting in the worker at once.
      timeout(int): Milliseconds ``__next__`` waits before returning ``None``.
      producer(KafkaProducer): The process's producer: a job is finished
        only once Kafka has the records it enqueued.
      dead_letters(DeadLetterWriter): Writes records that fail for good or
        cannot be decoded.
      services(QueueServices): Sends a failed job again
        (``retry_mode="requeue"``) and hears of each dead letter.
      settle_timeout(float): Seconds ``close`` waits for dead letters and
        sends still in flight.

    When it commits and how long a revocation waits for running jobs are
    :class:`~dramatiq_kafka.topic_partitions.TopicPartitions`' defaults.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        topology: Topology,
        member: GroupMember,
        prefetch: int,
        timeout: int,
        producer: KafkaProducer,
        dead_letters: DeadLetterWriter,
        services: QueueServices,
        settle_timeout: float = 10.0,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topology = topology
        self.topic = topology.topic_name(queue_name)
        self.config = topology.queue_config(queue_name)
        self.member = member
        self.timeout = timeout / 1000
        self.producer = producer
        self.services = services
        self.settle_timeout = settle_timeout
        prefetch = max(prefetch, 1)
        self.partitions = TopicPartitions(
            queue_name=queue_name,
            topology=topology,
            scheduler=Scheduler(
                limit=prefetch,
                ordered=self.config.ordered,
                # A partition whose jobs cannot start (every slot held by long
                # jobs) still gets a record per poll; past this its fetching is
                # paused.  High, because each resume costs a fetch round.
                buffer_limit=max(4 * prefetch, 1000),
            ),
            member=member,
            dead_letters=dead_letters,
            logger=self.logger,
        )
        member.attach(self)

    def _held_back(self) -> float:
        """How long to wait for a job's end before polling again, when fetched records
        cannot start until one ends (0 when the next record fetched could start)."""
        partitions = self.partitions
        with partitions.lock:
            if partitions.scheduler.in_flight >= partitions.scheduler.limit:
                return POLL_SLICE
            if any(s.buffer for s in partitions.held.values()):
                # Records of other partitions may come meanwhile.
                return BUSY_POLL_SLICE
        return 0.0

    def accept(self, records: list[KafkaRecord]) -> None:
        """Records fetched from this consumer's topic (on the member's thread)."""
        partitions = self.partitions
        with partitions.lock:
            for record in records:
                key = record.key()
                partitions.scheduler.fetched(
                    record.partition() or 0,
                    record.offset() or 0,
                    key if isinstance(key, bytes) else None,
                    record,
                )
        partitions.wake()

    # -- the iterator --------------------------------------------------------------------------------

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            self.partitions.before_turn(now)
            proxy = self._dispatch(now)
            if proxy is not None:
                return proxy
            if now >= deadline:
                return None
            # Records arriving, a job ending (a slot or a key free again) and a
            # revocation wake this thread before then.
            self.partitions.idle(now, deadline, 0.0 if self.member.shared else self._held_back())

    def _dispatch(self, now: float) -> MessageProxy | None:
        """The next job that may start, if any: a retry that fell due, or the
        next fetched record of a partition, taking partitions in turn."""
        while True:
            with self.partitions.lock:
                job = self.partitions.scheduler.next_job(now)
                if job is None:
                    return None
                retried, job.detail = job.detail, None
            if isinstance(retried, KafkaMessageProxy):
                return retried.again()
            record = job.record
            try:
                message = decode_message(record.value(), self.queue_name)
                if job.failures:  # failed runs under an earlier owner of the partition
                    message.options["retries"] = job.failures
                refusal = self.topology.refusal(message)
                if refusal is not None:
                    raise DecodeError(refusal, record.value(), None)
            except DecodeError as e:
                self.partitions.dead_letter_undecodable(job, e)
                continue
            return KafkaMessageProxy(message, record, job, self)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        # Nothing to send back: unfinished offsets are never committed,
        # so Kafka hands these records out again after a restart.
        pass

    def close(self) -> None:
        """Commit what is finished, synchronously, and stop fetching this topic (the
        process leaves the group with its last consumer)."""
        self.partitions.close(self, self.settle_timeout)
