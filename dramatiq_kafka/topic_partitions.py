"""One topic's partitions in this process: what both kinds of consumer share.

:class:`TopicPartitions` keeps a topic's :class:`~dramatiq_kafka.scheduling.Scheduler`
under a lock and carries out what the process's
:class:`~dramatiq_kafka.group.GroupMember` reports about the partitions (assigned,
revoked, lost, committed) and what the scheduler decides for them: pausing and
resuming their fetching, committing, dead-lettering a record.  The consumer of a
queue (``consumer.py``) and the consumer of a delay topic (``delay_consumer.py``)
each hold one and differ only in what they do with a fetched record.  What a
record's job becomes is not here: that is ``settling.py`` and ``outcomes.py``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.errors import DecodeError

from .events import EVENTS
from .offsets import PartitionProgress, decode_progress, encode_progress
from .partition_state import Job, JobState, PartitionSchedule
from .scheduling import Scheduler

if TYPE_CHECKING:
    from .dead_letters import DeadLetterWriter
    from .group import GroupMember
    from .topology import Topology

__all__ = ["PROGRESS_TIMEOUT", "TopicConsumer", "TopicPartitions"]

#: Seconds an assignment waits for the progress its partitions' earlier owners committed.
PROGRESS_TIMEOUT = 10.0
#: Seconds before a refused dead letter is written again, doubling up to the cap.
DEAD_LETTER_BACKOFF = 1.0
DEAD_LETTER_MAX_BACKOFF = 60.0


class TopicConsumer(Protocol):
    """What a :class:`~dramatiq_kafka.group.GroupMember` fetches for: a topic's
    partitions, and what to do with the records fetched from them."""

    topic: str
    partitions: TopicPartitions

    def accept(self, records: list[KafkaRecord]) -> None:
        """Records fetched from ``topic`` (on the member's thread)."""


class TopicPartitions:
    """The partitions of ``topic`` that this process holds, and what happens to them.

    Acks arrive from worker threads, delivery reports from the producer's
    thread, records and rebalance events from the member's thread: every
    change to the scheduler is made under :attr:`lock`.

    Parameters:
      queue_name(str): The queue (or delay queue) whose topic it is.
      topology(Topology): Names the topic and its dead-letter topic.
      scheduler(Scheduler): The Kafka-free state of the partitions.
      member(GroupMember): The process's Kafka consumer that fetches the topic.
      dead_letters(DeadLetterWriter): Writes records that fail for good or
        cannot be decoded.
      logger: The consumer's logger.
      commit_interval(float): Seconds between asynchronous commits.
      commit_every(int): Commit sooner once this many records finished.
      revoke_grace(float): Seconds a revocation waits for the partitions'
        running jobs to finish (and be committed) before letting them go.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        topology: Topology,
        scheduler: Scheduler,
        member: GroupMember,
        dead_letters: DeadLetterWriter,
        logger: Any,
        commit_interval: float = 0.5,
        commit_every: int = 100,
        revoke_grace: float = 5.0,
    ) -> None:
        self.topic = topology.topic_name(queue_name)
        self.queue_name = queue_name
        self.scheduler = scheduler
        self.member = member
        self.dead_letters = dead_letters
        self.dead_letter_topic = topology.dead_letter_topic(queue_name)
        self.logger = logger
        self.commit_interval = commit_interval
        self.commit_every = commit_every
        self.revoke_grace = revoke_grace
        self.lock = threading.Lock()
        #: Records finished since the last commit (under the lock).
        self.finished_since_commit = 0
        #: Whether the consumer closed: later acks change nothing.
        self.closed = False
        # Notified whenever something may have changed for the iterating thread:
        # records arrived, a job ended (a slot or a key may be free), partitions went.
        self._wakeup = threading.Condition()
        self._woken = False
        self._next_commit = time.monotonic() + commit_interval
        self._told_idle = False
        # What the member failed with, raised from the consumer's next __next__.
        self._failure: Exception | None = None

    @property
    def held(self) -> dict[int, PartitionSchedule]:
        """The partitions held now, by number."""
        return self.scheduler.partitions

    def snapshot(self) -> dict[str, Any]:
        """A read-only view for status records (``status.py``): the partitions
        (see ``PartitionSchedule.snapshot``) and the last poll."""
        now = time.monotonic()
        with self.lock:
            partitions = [s.snapshot(now) for _, s in sorted(self.held.items())]
        return {"topic": self.topic, "partitions": partitions, "last_poll": self.member.last_poll}

    # -- waking the consumer's thread ----------------------------------------------------------------

    def wake(self) -> None:
        """Tell the iterating thread a slot, a key or a partition may be free."""
        with self._wakeup:
            self._woken = True
            self._wakeup.notify_all()

    def sleep(self, seconds: float, held_back: float = 0.0) -> None:
        """Wait up to ``seconds`` for a wake-up, unless one came since the last.

        A member of this topic alone is polled from the consumer's thread, but not
        for the ``held_back`` seconds in which only the end of a job can let another
        start: librdkafka's poll cannot be woken by an ack, and waiting in it held
        each freed slot for up to a poll slice (2,900 jobs/s where Dramatiq's worker
        runs 13,000).
        """
        seconds = max(0.0, seconds)
        shared = self.member.shared
        if shared:
            held_back = 0.0  # the member's own thread polls
        with self._wakeup:
            woken, self._woken = self._woken, False
            if not woken and (shared or held_back):
                self._wakeup.wait(min(seconds, held_back) if held_back else seconds)
                self._woken = False
        if not shared:
            self.member.turn(0.0 if woken or held_back else seconds)

    def _wait(self, seconds: float) -> None:
        with self._wakeup:
            self._wakeup.wait(seconds)

    def fail(self, error: Exception) -> None:
        """The member can fetch no more: the consumer's next ``__next__`` raises ``error``."""
        self._failure = error
        self.wake()

    def before_turn(self, now: float) -> None:
        """What a consumer's ``__next__`` does first: raise what the member failed
        with, write again the dead letters whose backoff is over."""
        error, self._failure = self._failure, None
        if error is not None:
            raise error
        with self.lock:
            due = self.scheduler.dead_letters_due(now)
        for job in due:
            self._write_dead_letter(job)

    def idle(self, now: float, until: float, held_back: float = 0.0) -> None:
        """Pause or resume what needs it, then wait until ``until`` (monotonic),
        something falls due or a wake-up (see :meth:`sleep`)."""
        self.update_pauses()
        with self.lock:
            due = self.scheduler.next_due()
        self.sleep(min(until, math.inf if due is None else due) - now, held_back)

    def busy(self) -> bool:
        """Whether jobs run or wait (the member then polls in short slices)."""
        with self.lock:
            return self.scheduler.in_flight > 0 or any(s.buffer or s.blocked for s in self.held.values())

    # -- what the member reports (its thread) --------------------------------------------------------

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, partition) for partition in partitions]

    def assigned(self, partitions: list[int]) -> None:
        """The group gave these ``partitions`` (maybe none) in a new generation."""
        carried = self._progress_earlier(partitions) if partitions else {}
        with self.lock:
            for partition in partitions:
                # Its pause state is unknown to this assignment: the next
                # pause update tells librdkafka, which keeps a pause across
                # revocations, what this partition wants.
                self.scheduler.assign(partition, carried.get(partition))
            holding = len(self.held)
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
        with self.lock:
            states = [s for s in (self.scheduler.revoke(p) for p in partitions) if s is not None]
        # librdkafka remembers a pause across revoke and re-assign: a
        # partition paused now would come back paused, whoever gets it next.
        try:
            self.member.resume(self._tps(partitions))
        except KafkaException as e:
            self.logger.debug("Could not resume %s before leaving them: %s", partitions, e)
        return states

    def wait_settled(self, states: list[PartitionSchedule], deadline: float) -> None:
        """Wait until no job of ``states`` runs or is being dead-lettered, or ``deadline``."""
        while time.monotonic() < deadline and any(s.in_flight or s.dead_letters_pending for s in states):
            self._wait(0.05)

    def lost(self, partitions: list[int]) -> None:
        """The group gave ``partitions`` to others without a revocation."""
        self.logger.warning("Partitions %s of %r lost.", sorted(partitions), self.topic)
        self.forget(partitions)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop ``partitions``: fetched records, pending retries and the offsets go with
        them; their new owner starts again from the committed offset."""
        with self.lock:
            for partition in list(partitions):
                self.scheduler.forget(partition)
        self.wake()

    # -- committing ----------------------------------------------------------------------------------

    def committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Kafka's answer to a commit of these ``partitions``."""
        with self.lock:
            for tp in partitions:
                if error is None and tp.error is None:
                    self.scheduler.committed(tp.partition, tp.offset)
                elif (state := self.held.get(tp.partition)) is not None:
                    state.last_progress = None  # commit it again

    def commit_positions(
        self, partitions: Iterable[int] | None = None, *, final: bool = False
    ) -> list[TopicPartition]:
        """What to commit now for ``partitions`` (all of them by default), with each
        one's progress in the metadata (see ``Scheduler.commit_positions``)."""
        with self.lock:
            positions = self.scheduler.commit_positions(partitions, final=final)
        return [
            TopicPartition(self.topic, partition, progress.offset, metadata=encode_progress(progress))
            for partition, progress in positions.items()
        ]

    def commit_when_due(self, now: float) -> list[TopicPartition]:
        """What to commit now, when the interval is up or enough records finished."""
        if now < self._next_commit and self.finished_since_commit < self.commit_every:
            return []
        self.finished_since_commit = 0
        self._next_commit = now + self.commit_interval
        return self.commit_positions()

    # -- flow control --------------------------------------------------------------------------------

    def update_pauses(self) -> None:
        """Pause fetching for partitions that are blocked or whose buffer is
        full; resume the others."""
        with self.lock:
            pause, resume = self.scheduler.pause_changes()
            if pause or resume:
                paused = sum(bool(s.paused) for s in self.held.values())
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

    # -- dead letters --------------------------------------------------------------------------------

    def dead_letter_undecodable(self, job: Job, error: DecodeError) -> None:
        """Dead-letter, unrun, a record that is no message of this queue."""
        record = job.record
        self.logger.error(
            "Record %s/%s@%s cannot be decoded (%s).",
            record.topic(),
            record.partition(),
            record.offset(),
            error,
        )
        self.dead_letter(job, message_id="", attempts=0, reason=str(error))

    def dead_letter(
        self,
        job: Job,
        *,
        message_id: str,
        attempts: int,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        """Write the job's record to the dead-letter topic; its partition
        starts no new job until Kafka has it, then its offset is finished."""
        # The headers are made once: no exception (and none of its frames)
        # is kept while a refused write waits to be tried again.
        headers = self.dead_letters.headers(job.record, attempts=attempts, error=error, reason=reason)
        with self.lock:
            if not self.scheduler.dead_lettering(job):
                return
            job.detail = (message_id, headers)
        self._write_dead_letter(job)

    def _write_dead_letter(self, job: Job) -> None:
        message_id, headers = job.detail

        def done(error: object | None) -> None:
            if error is None:
                with self.lock:
                    written = self.scheduler.dead_lettered(job)
                    self.finished_since_commit += written
                if written:
                    EVENTS.dead_lettered(self.queue_name, self.dead_letter_topic)
            else:
                backoff = min(DEAD_LETTER_BACKOFF * 2 ** (job.attempts_of_write - 1), DEAD_LETTER_MAX_BACKOFF)
                self.logger.error(
                    "Could not dead-letter message %s to %r (%s); trying again in %.1fs. "
                    "Its offset stays uncommitted.",
                    message_id or f"at {job.partition}@{job.offset}",
                    self.dead_letter_topic,
                    error,
                    backoff,
                )
                with self.lock:
                    self.scheduler.dead_letter_refused(job, time.monotonic() + backoff)
            self.wake()

        self.dead_letters.write(
            self.dead_letter_topic, job.record, headers, message_id=message_id, on_done=done
        )

    # -- closing -------------------------------------------------------------------------------------

    def close(self, consumer: TopicConsumer, settle_timeout: float) -> None:
        """Wait up to ``settle_timeout`` for dead letters and sends of finished jobs
        still in flight (they finish their offsets when delivered), commit what is
        finished, synchronously, and stop fetching the topic."""
        deadline = time.monotonic() + settle_timeout
        while time.monotonic() < deadline:
            with self.lock:
                pending = any(
                    job.state in (JobState.AWAITING_SENDS, JobState.DEAD_LETTERING) and job.due is None
                    for s in self.held.values()
                    for job in s.jobs.values()
                )
            if not pending:
                break
            self._wait(0.05)
        try:
            self.member.detach(consumer)
        except KafkaException as e:
            self.logger.warning("Offset commit failed: %s", e.args[0])
        finally:
            with self.lock:
                self.closed = True
                for partition in list(self.held):
                    self.scheduler.forget(partition)
