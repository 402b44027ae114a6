"""The Dramatiq consumer of one queue's topic: Kafka's side of the partition state machine.

Records come from the process's :class:`~dramatiq_kafka.group.GroupMember`, the one
Kafka consumer that every queue of the process shares: its thread polls Kafka
whatever the jobs are doing, so the group membership never depends on how long a job
runs, and it routes here the records, rebalance events and commit reports of this
queue's topic.  What may start, wait or commit is decided by the Kafka-free
:class:`~dramatiq_kafka.scheduling.Scheduler`; this module feeds it those events and
carries out what it decides: pausing and resuming fetching, handing out messages to
the thread that iterates it (Dramatiq's ``ConsumerThread``), committing.  Acks, nacks,
retries and dead letters are carried out in ``settling.py``; what becomes of a failed
run is decided in ``outcomes.py``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import DecodeError
from dramatiq.logging import get_logger

from .dead_letters import DeadLetterWriter
from .events import EVENTS
from .group import BUSY_POLL_SLICE, POLL_SLICE, GroupMember
from .offsets import PartitionProgress, decode_progress, encode_progress
from .partition_state import Job, JobState, PartitionSchedule
from .partitions import KafkaMessageProxy
from .producer import KafkaProducer
from .scheduling import Scheduler
from .services import QueueServices
from .settling import JobSettling
from .topology import Topology
from .wire import decode_message

#: Seconds an assignment waits for the progress its partitions' earlier owners committed.
PROGRESS_TIMEOUT = 10.0


class KafkaConsumer(JobSettling, Consumer):
    """Consumes one topic as part of the process's member of the workers' consumer group.

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
      commit_interval(float): Seconds between asynchronous commits.
      commit_every(int): Commit sooner once this many jobs finished, so a
        crash repeats at most this many finished jobs (plus those that
        finished behind a job still running).
      revoke_grace(float): Seconds a revocation waits for the partitions'
        running jobs to finish (and be committed) before letting them go.
    """

    #: The per-partition state this consumer keeps.
    schedule_type: type[PartitionSchedule] = PartitionSchedule

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
        commit_interval: float = 0.5,
        commit_every: int = 100,
        revoke_grace: float = 5.0,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topology = topology
        self.topic = topology.topic_name(queue_name)
        self.dead_letter_topic = topology.dead_letter_topic(queue_name)
        self.config = topology.queue_config(queue_name)
        self.member = member
        self.prefetch = max(prefetch, 1)
        self.timeout = timeout / 1000
        self.producer = producer
        self.dead_letters = dead_letters
        self.services = services
        self.settle_timeout = settle_timeout
        self.commit_interval = commit_interval
        self.commit_every = commit_every
        self.revoke_grace = revoke_grace

        # Guards the scheduler: acks arrive from worker threads, delivery
        # reports from the producer's thread, records and rebalance events
        # from the member's thread.
        self._lock = threading.Lock()
        self._scheduler = Scheduler(
            limit=self.prefetch,
            ordered=self.config.ordered,
            # A partition whose jobs cannot start (every slot held by long
            # jobs) still gets a record per poll; past this its fetching is
            # paused.  High, because each resume costs a fetch round.
            buffer_limit=self.partition_buffer(),
            schedule_type=self.schedule_type,
        )
        # Notified whenever something may have changed for the iterating thread:
        # records arrived, a job ended (a slot or a key may be free), partitions went.
        self._wakeup = threading.Condition()
        self._woken = False
        self._finished_since_commit = 0
        self._next_commit = time.monotonic() + commit_interval
        self._closed = False
        self._told_idle = False
        # What the member failed with, raised from the next __next__.
        self._failure: Exception | None = None
        member.attach(self)

    def partition_buffer(self) -> int:
        """Records buffered per partition past which its fetching pauses."""
        return max(4 * self.prefetch, 1000)

    @property
    def _partitions(self) -> dict[int, PartitionSchedule]:
        return self._scheduler.partitions

    @property
    def last_poll(self) -> float | None:
        """Wall-clock time of the last poll of Kafka for this consumer."""
        return self.member.last_poll

    def snapshot(self) -> dict[str, Any]:
        """A read-only view of this consumer for status records (``status.py``):
        its partitions (see ``PartitionSchedule.snapshot``) and the last poll."""
        now = time.monotonic()
        with self._lock:
            partitions = [s.snapshot(now) for _, s in sorted(self._partitions.items())]
        return {"topic": self.topic, "partitions": partitions, "last_poll": self.last_poll}

    def _sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a wake-up, unless one came since the last.

        A member of this consumer alone is polled from this thread, but not while only
        the end of a job can let another start: librdkafka's poll cannot be woken by an
        ack, and waiting in it held each freed slot for up to a poll slice (2,900 jobs/s
        where Dramatiq's worker runs 13,000).
        """
        seconds = max(0.0, seconds)
        held_back = 0.0 if self.member.shared else self._held_back()
        with self._wakeup:
            woken, self._woken = self._woken, False
            if not woken and (self.member.shared or held_back):
                self._wakeup.wait(min(seconds, held_back) if held_back else seconds)
                self._woken = False
        if not self.member.shared:
            self.member.turn(0.0 if woken or held_back else seconds)

    def _held_back(self) -> float:
        """How long to wait for a job's end before polling again, when fetched records
        cannot start until one ends (0 when the next record fetched could start)."""
        with self._lock:
            if self._scheduler.in_flight >= self._scheduler.limit:
                return POLL_SLICE
            if any(s.buffer for s in self._partitions.values()):
                # Records of other partitions may come meanwhile.
                return BUSY_POLL_SLICE
        return 0.0

    # -- what the member routes here (its thread) ----------------------------------------------------

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, partition) for partition in partitions]

    def accept(self, records: list[KafkaRecord]) -> None:
        """Records fetched from this consumer's topic."""
        for record in records:
            self._accept(record)
        self._wake()

    def _accept(self, record: KafkaRecord) -> None:
        key = record.key()
        with self._lock:
            self._scheduler.fetched(
                record.partition() or 0,
                record.offset() or 0,
                key if isinstance(key, bytes) else None,
                record,
            )

    def busy(self) -> bool:
        """Whether jobs of this consumer run or wait (the member then polls in short slices)."""
        with self._lock:
            return self._scheduler.in_flight > 0 or any(
                s.buffer or s.blocked for s in self._partitions.values()
            )

    def fail(self, error: Exception) -> None:
        """The member can fetch no more for this consumer: ``__next__`` raises ``error``."""
        self._failure = error
        self._wake()

    def assigned(self, partitions: list[int]) -> None:
        """The group gave this consumer ``partitions`` (maybe none) in a new generation."""
        carried = self._progress_earlier(partitions) if partitions else {}
        with self._lock:
            for partition in partitions:
                # Its pause state is unknown to this assignment: the next
                # pause update tells librdkafka, which keeps a pause across
                # revocations, what this partition wants.
                self._scheduler.assign(partition, carried.get(partition))
            holding = len(self._partitions)
        if partitions:
            self.logger.info("Assigned partitions %s of %r.", partitions, self.topic)
        elif not holding and not self._told_idle:
            # Cooperative rebalances call this once per step: say it once.
            self.logger.info(
                "This worker holds no partition of %r: the group's other members hold them all "
                "(a topic needs as many partitions as the worker processes meant to share it).",
                self.topic,
            )
        self._told_idle = not holding

    def _progress_earlier(self, partitions: list[int]) -> dict[int, PartitionProgress]:
        """What the partitions' earlier owners committed past their committed offsets."""
        try:
            committed = self.member.committed(self._tps(partitions), timeout=PROGRESS_TIMEOUT)
        except KafkaException as e:
            self.logger.warning(
                "Could not read the progress committed for partitions %s of %r (%s): the jobs "
                "finished past their committed offsets run again.",
                partitions,
                self.topic,
                e.args[0],
            )
            return {}
        carried = {}
        for tp in committed:
            if tp.error is not None or tp.offset < 0:
                continue
            try:
                carried[tp.partition] = decode_progress(tp.offset, tp.metadata)
            except ValueError as e:
                self.logger.warning(
                    "The progress committed for %s/%d is unreadable (%s): its jobs finished past "
                    "offset %d run again.",
                    self.topic,
                    tp.partition,
                    e,
                    tp.offset,
                )
        return carried

    def revoking(self, partitions: list[int]) -> list[PartitionSchedule]:
        """The group takes ``partitions`` back: start no job of theirs; returns their
        states, for :meth:`wait_settled`."""
        self.logger.info("Partitions %s of %r revoked.", sorted(partitions), self.topic)
        with self._lock:
            states = [s for s in (self._scheduler.revoke(p) for p in partitions) if s is not None]
        self._resume_before_leaving(partitions)
        return states

    def wait_settled(self, states: list[PartitionSchedule], deadline: float) -> None:
        """Wait until no job of ``states`` runs or is being dead-lettered, or ``deadline``."""
        while time.monotonic() < deadline and any(s.in_flight or s.dead_letters_pending for s in states):
            with self._wakeup:
                self._wakeup.wait(0.05)

    def lost(self, partitions: list[int]) -> None:
        """The group gave ``partitions`` to others without a revocation."""
        self.logger.warning("Partitions %s of %r lost.", sorted(partitions), self.topic)
        self.forget(partitions)

    def _resume_before_leaving(self, partitions: list[int]) -> None:
        # librdkafka remembers a pause across revoke and re-assign: a
        # partition paused now would come back paused, whoever gets it next.
        try:
            self.member.resume(self._tps(partitions))
        except KafkaException as e:
            self.logger.debug("Could not resume %s before leaving them: %s", partitions, e)

    def forget(self, partitions: list[int]) -> None:
        """Drop ``partitions``: fetched records, pending retries and the offsets go with
        them; their new owner starts again from the committed offset."""
        with self._lock:
            for partition in partitions:
                self._scheduler.forget(partition)
        self._wake()

    # -- committing ----------------------------------------------------------------------------------

    def committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Kafka's answer to a commit of this consumer's ``partitions``."""
        with self._lock:
            for tp in partitions:
                if error is None and tp.error is None:
                    self._scheduler.committed(tp.partition, tp.offset)
                elif (state := self._partitions.get(tp.partition)) is not None:
                    state.last_progress = None  # commit it again

    def commit_positions(
        self, partitions: Iterable[int] | None = None, *, final: bool = False
    ) -> list[TopicPartition]:
        """What to commit now for ``partitions`` (all of them by default), with each
        one's progress in the metadata (see ``Scheduler.commit_positions``)."""
        with self._lock:
            positions = self._scheduler.commit_positions(partitions, final=final)
        return [
            TopicPartition(self.topic, partition, progress.offset, metadata=encode_progress(progress))
            for partition, progress in positions.items()
        ]

    def commit_when_due(self, now: float) -> list[TopicPartition]:
        """What to commit now, when the interval is up or enough jobs finished."""
        if now < self._next_commit and self._finished_since_commit < self.commit_every:
            return []
        self._finished_since_commit = 0
        self._next_commit = now + self.commit_interval
        return self.commit_positions()

    # -- flow control --------------------------------------------------------------------------------

    def _update_pauses(self) -> None:
        """Pause fetching for partitions that are blocked or whose buffer is
        full; resume the others."""
        with self._lock:
            pause, resume = self._scheduler.pause_changes()
            if pause or resume:
                paused = sum(bool(s.paused) for s in self._partitions.values())
        if not (pause or resume):
            return
        EVENTS.paused(self.queue_name, paused)
        try:
            if pause:
                self.member.pause(self._tps(pause))
            if resume:
                self.member.resume(self._tps(resume))
        except KafkaException as e:
            # A partition revoked meanwhile: the next assignment starts afresh.
            self.logger.warning("Could not pause %s / resume %s: %s", pause, resume, e.args[0])

    # -- the iterator --------------------------------------------------------------------------------

    def _raise_failure(self) -> None:
        error, self._failure = self._failure, None
        if error is not None:
            raise error

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            self._raise_failure()
            self._write_due_dead_letters(now)
            proxy = self._dispatch(now)
            if proxy is not None:
                return proxy
            if now >= deadline:
                return None
            self._update_pauses()
            # Records arriving, a job ending (a slot or a key free again) and a
            # revocation wake this thread before then.
            self._sleep(min(deadline, self._next_due(now)) - now)

    def _next_due(self, now: float) -> float:
        """When (monotonic) something falls due: a retry, a dead letter to write again."""
        with self._lock:
            due = self._scheduler.next_due()
        return math.inf if due is None else due

    def _dispatch(self, now: float) -> MessageProxy | None:
        """The next job that may start, if any: a retry that fell due, or the
        next fetched record of a partition, taking partitions in turn."""
        while True:
            with self._lock:
                job = self._scheduler.next_job(now)
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
                self._dead_letter_undecodable(job, e)
                continue
            return KafkaMessageProxy(message, record, job, self)

    def _dead_letter_undecodable(self, job: Job, error: DecodeError) -> None:
        """Dead-letter, unrun, a record that is no message of this queue."""
        record = job.record
        self.logger.error(
            "Record %s/%s@%s cannot be decoded (%s).",
            record.topic(),
            record.partition(),
            record.offset(),
            error,
        )
        self._dead_letter(job, message_id="", attempts=0, reason=str(error))

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        # Nothing to send back: unfinished offsets are never committed,
        # so Kafka hands these records out again after a restart.
        pass

    def close(self) -> None:
        """Commit what is finished, synchronously, and stop fetching this topic (the
        process leaves the group with its last consumer)."""
        deadline = time.monotonic() + self.settle_timeout
        # Dead letters and sends of finished jobs still in flight finish
        # their offsets when delivered.
        while time.monotonic() < deadline:
            with self._lock:
                pending = any(
                    job.state in (JobState.AWAITING_SENDS, JobState.DEAD_LETTERING) and job.due is None
                    for s in self._partitions.values()
                    for job in s.jobs.values()
                )
            if not pending:
                break
            with self._wakeup:
                self._wakeup.wait(0.05)
        try:
            self.member.detach(self)
        except KafkaException as e:
            self.logger.warning("Offset commit failed: %s", e.args[0])
        finally:
            with self._lock:
                self._closed = True
                for partition in list(self._partitions):
                    self._scheduler.forget(partition)
