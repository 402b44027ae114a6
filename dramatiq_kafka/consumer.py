"""The Dramatiq consumer of one queue's topic: Kafka's side of the partition state machine.

The thread that iterates it (Dramatiq's ``ConsumerThread``) polls Kafka on
every call, whatever the jobs are doing: the group membership never depends
on how long a job runs.  What may start, wait or commit is decided by the
Kafka-free :class:`~dramatiq_kafka.scheduling.Scheduler`; this module feeds
it Kafka's events (records fetched, partitions assigned and revoked, delivery
reports) and carries out what it decides: pausing and resuming fetching,
handing out messages, committing.  Acks, nacks, retries and dead letters are
carried out in ``settling.py``; what becomes of a failed run is decided in
``outcomes.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import DecodeError
from dramatiq.logging import get_logger
from dramatiq.message import Message

from .client_errors import ClientErrors
from .dead_letters import DeadLetterWriter
from .errors import KafkaConnectionError
from .events import EVENTS
from .partitions import KafkaMessageProxy
from .producer import KafkaProducer
from .retries import RetryPolicy
from .scheduling import JobState, PartitionSchedule, Scheduler
from .settling import JobSettling
from .wire import decode_message

#: Settings every worker consumer gets; the user's config may override them.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # Bounds the records librdkafka keeps fetched ahead (default 64 MiB).
    "queued.max.messages.kbytes": 16384,
    # Per partition (default 100,000): the byte bound counts compressed
    # batches, so under a deep backlog librdkafka held ten times as much
    # decompressed (a worker at 160 MB with 200,000 jobs waiting, 193 MB
    # with 400,000).  1,000 matches the consumer's own per-partition buffer.
    "queued.min.messages": 1000,
    # A partition over that bound is fetched again after this (default
    # 1000 ms, which idled partitions that drained within a second).
    "fetch.queue.backoff.ms": 20,
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
#: The longest a poll blocks while a job of this consumer runs.  Nothing can wake a
#: thread inside librdkafka's poll, and a job that fails with a short backoff is
#: started again by this thread: with 100 ms slices, each "retry in 0 ms" took 100.
IN_FLIGHT_POLL_SLICE = 0.005
#: The most records fetched by one poll.
POLL_BATCH = 500

#: A consumer that lost its partitions and heard of no new assignment for
#: this many session timeouts is no member of its group any more: it is rebuilt.
REJOIN_SESSIONS = 3
#: The session timeout librdkafka uses when the config sets none.
DEFAULT_SESSION_MS = 45_000

#: Decides how a failed message is retried.
RetryPolicyFor = Callable[[MessageProxy], RetryPolicy]


class KafkaConsumer(JobSettling, Consumer):
    """Consumes one topic as a member of the workers' consumer group.

    Parameters:
      queue_name(str): The Dramatiq queue (what ``message.queue_name`` says).
      topic(str): The topic behind it.
      config(dict): librdkafka consumer settings, ``group.id`` included.
      prefetch(int): The most jobs running or waiting in the worker at once.
      timeout(int): Milliseconds ``__next__`` waits before returning ``None``.
      producer(KafkaProducer): The process's producer: a job is finished
        only once Kafka has the records it enqueued.
      dead_letters(DeadLetterWriter): Writes records that fail for good or
        cannot be decoded.
      dead_letter_topic(str): The topic they go to.
      retry_policy(callable): The :class:`RetryPolicy` of a failed message.
      refuse(callable): Why a decoded message is no job of this queue, or
        ``None``; a refused message is dead-lettered unrun.
      ordered(bool): Run one job per partition at a time.
      settle_timeout(float): Seconds ``close`` waits for dead letters and
        sends still in flight.
      commit_interval(float): Seconds between asynchronous commits.
      commit_every(int): Commit sooner once this many jobs finished, so a
        crash repeats at most this many finished jobs (plus those that
        finished behind a job still running).
      revoke_grace(float): Seconds a revocation waits for the partitions'
        running jobs to finish (and be committed) before letting them go.
      on_dead_letter(callable): Called with each dead-lettered message and
        whether it had used up its retries.
      retry_mode(str): ``"pause"`` retries a failed job in place;
        ``"requeue"`` hands it to ``send_retry`` and moves on.
      send_retry(callable): Sends a failed message again, with a delay in
        milliseconds (``retry_mode="requeue"``).
    """

    #: The per-partition state this consumer keeps.
    schedule_type: type[PartitionSchedule] = PartitionSchedule

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
        retry_policy: RetryPolicyFor = lambda message: RetryPolicy(),
        refuse: Callable[[Message[Any]], str | None] = lambda message: None,
        ordered: bool = False,
        settle_timeout: float = 10.0,
        commit_interval: float = 0.5,
        commit_every: int = 100,
        revoke_grace: float = 5.0,
        on_dead_letter: Callable[[KafkaMessageProxy, bool], None] | None = None,
        retry_mode: str = "pause",
        send_retry: Callable[[KafkaMessageProxy, int], object] | None = None,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topic = topic
        self.prefetch = max(prefetch, 1)
        # Fetched records kept ready, in all: polls take no more than this.
        self.buffer_low = max(self.prefetch, POLL_BATCH // 2)
        self.timeout = timeout / 1000
        self.producer = producer
        self.dead_letters = dead_letters
        self.dead_letter_topic = dead_letter_topic
        self.retry_policy = retry_policy
        self.refuse = refuse
        self.ordered = ordered
        self.settle_timeout = settle_timeout
        self.commit_interval = commit_interval
        self.commit_every = commit_every
        self.revoke_grace = revoke_grace
        self.on_dead_letter = on_dead_letter
        self.retry_mode = retry_mode
        self.send_retry = send_retry

        # Guards the scheduler: acks arrive from worker threads, delivery
        # reports from the producer's thread, rebalance callbacks run on the
        # polling thread.
        self._lock = threading.Lock()
        self._scheduler = Scheduler(
            limit=self.prefetch,
            ordered=ordered,
            # A partition whose jobs cannot start (every slot held by long
            # jobs) still gets a record per poll; past this its fetching is
            # paused.  High, because each resume costs a fetch round.
            buffer_limit=self.partition_buffer(),
            schedule_type=self.schedule_type,
        )
        # Notified whenever a job ends: a slot or a key may be free again.
        self._room = threading.Condition()
        self._finished_since_commit = 0
        self._next_commit = time.monotonic() + commit_interval
        self._next_poll = 0.0
        self._closed = False
        self._told_idle = False
        # When the group last took this member's partitions without a
        # revocation; None while it is (or is becoming) a member.
        self._lost_at: float | None = None
        self._gave_up = False
        self.rejoin_timeout = (
            REJOIN_SESSIONS * int(config.get("session.timeout.ms", DEFAULT_SESSION_MS)) / 1000
        )
        #: Wall-clock time of the last poll of Kafka (status records show it).
        self.last_poll: float | None = None

        defaults = self.client_defaults()
        if config.get("group.protocol", "classic") == "classic":
            defaults.update(CLASSIC_GROUP_DEFAULTS)
        # Refused credentials come out of consume() as an AuthenticationError.
        errors = ClientErrors(config, f"consumer of {topic!r}", raise_failure=True)
        self._consumer = ConfluentConsumer(
            {**defaults, **config, "on_commit": self._on_commit, "error_cb": errors}
        )
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def client_defaults(self) -> dict[str, Any]:
        """librdkafka settings of this consumer that the user's config may override."""
        return dict(CONSUMER_DEFAULTS)

    def partition_buffer(self) -> int:
        """Records buffered per partition past which its fetching pauses."""
        return max(4 * self.prefetch, 1000)

    @property
    def _partitions(self) -> dict[int, PartitionSchedule]:
        return self._scheduler.partitions

    def snapshot(self) -> dict[str, Any]:
        """A read-only view of this consumer for status records (``status.py``):
        its partitions (see ``PartitionSchedule.snapshot``) and the last poll."""
        now = time.monotonic()
        with self._lock:
            partitions = [s.snapshot(now) for _, s in sorted(self._partitions.items())]
        return {"topic": self.topic, "partitions": partitions, "last_poll": self.last_poll}

    # -- rebalance -----------------------------------------------------------------------------------

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, partition) for partition in partitions]

    def _on_assign(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted(tp.partition for tp in partitions)
        # Even an empty assignment means the member joined a generation.
        self._lost_at = None
        with self._lock:
            for partition in numbers:
                # Its pause state is unknown to this assignment: the next
                # brake pass tells librdkafka, which keeps a pause across
                # revocations, what this partition wants.
                self._scheduler.assign(partition)
            holding = len(self._partitions)
        if numbers:
            self.logger.info("Assigned partitions %s of %r.", numbers, self.topic)
        elif not holding and not self._told_idle:
            # Cooperative rebalances call this once per step: say it once.
            self.logger.info(
                "This worker holds no partition of %r: the group's other members hold them all "
                "(a topic needs as many partitions as the worker processes meant to share it).",
                self.topic,
            )
        self._told_idle = not holding

    def _on_revoke(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        self.logger.info(
            "Partitions %s of %r revoked.", sorted(tp.partition for tp in partitions), self.topic
        )
        numbers = [tp.partition for tp in partitions]
        with self._lock:
            states = [s for s in (self._scheduler.revoke(p) for p in numbers) if s is not None]
        self._resume_before_leaving(numbers)
        # Jobs already running may finish within the grace period: their
        # offsets are committed below and the new owner does not repeat them.
        # Long ones see revoked() and may stop early.
        deadline = time.monotonic() + self.revoke_grace
        while time.monotonic() < deadline and any(s.in_flight or s.dead_letters_pending for s in states):
            with self._room:
                self._room.wait(0.05)
        self._commit(numbers, asynchronous=False)
        self._forget(numbers)

    def _on_lost(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: another member may already own
        # these partitions, so committing now could skip its work.
        self.logger.warning(
            "Partitions %s of %r lost.", sorted(tp.partition for tp in partitions), self.topic
        )
        numbers = [tp.partition for tp in partitions]
        self._resume_before_leaving(numbers)
        self._forget(numbers)
        self._lost_at = time.monotonic()

    def _check_membership(self, now: float) -> None:
        """Give up a librdkafka handle that lost its partitions and never rejoined.

        After a node froze past the session timeout, a consumer sometimes
        (1 run in 4) logged its partitions lost and never got an assignment
        again, while the process's other consumer rejoined: the handle's
        group state never left the failed join: its coordinator connection
        kept the requests queued (JoinGroup, commits) and never sent them,
        and closing the handle waited on them for good.  Raising a connection error
        makes Dramatiq's consumer thread close this consumer and make a new
        one, which joins the group as a new member.
        """
        if self._lost_at is not None and now - self._lost_at > self.rejoin_timeout:
            lost_for = now - self._lost_at
            self._lost_at = None
            self._gave_up = True
            raise KafkaConnectionError(
                f"Consumer of {self.topic!r} lost its partitions {lost_for:.0f} s ago and has not "
                "rejoined its group since: starting a new consumer."
            )

    def _resume_before_leaving(self, partitions: list[int]) -> None:
        # librdkafka remembers a pause across revoke and re-assign: a
        # partition paused now would come back paused, whoever gets it next.
        try:
            self._consumer.resume(self._tps(partitions))
        except KafkaException as e:
            self.logger.debug("Could not resume %s before leaving them: %s", partitions, e)

    def _forget(self, partitions: list[int]) -> None:
        # Fetched records, pending retries and the offsets go with the
        # partition: its new owner starts again from the committed offset.
        with self._lock:
            for partition in partitions:
                self._scheduler.forget(partition)
        self._wake()

    # -- committing ----------------------------------------------------------------------------------

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self.logger.warning("Offset commit failed (will retry): %s", error)
            return
        with self._lock:
            for tp in partitions:
                if tp.error is None:
                    self._scheduler.committed(tp.partition, tp.offset)

    def _commit(self, partitions: Iterable[int] | None = None, *, asynchronous: bool = True) -> None:
        with self._lock:
            wanted = self._partitions.keys() if partitions is None else set(partitions)
            candidates = []
            for partition in wanted:
                state = self._partitions.get(partition)
                position = self._commit_position(state) if state is not None else None
                if position is not None:
                    candidates.append(position)
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

    def _commit_position(self, state: PartitionSchedule) -> TopicPartition | None:
        """What to commit for ``state`` now, if anything (under the lock)."""
        watermark = state.offsets.commit_candidate()
        return None if watermark is None else TopicPartition(self.topic, state.partition, watermark)

    def _commit_when_due(self, now: float) -> None:
        if now >= self._next_commit or self._finished_since_commit >= self.commit_every:
            self._finished_since_commit = 0
            self._commit()
            self._next_commit = now + self.commit_interval

    # -- flow control --------------------------------------------------------------------------------

    def _apply_brakes(self) -> None:
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
                self._consumer.pause(self._tps(pause))
            if resume:
                self._consumer.resume(self._tps(resume))
        except KafkaException as e:
            # A partition revoked meanwhile: the next assignment starts afresh.
            self.logger.warning("Could not pause %s / resume %s: %s", pause, resume, e.args[0])

    # -- the iterator --------------------------------------------------------------------------------

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            self._check_membership(now)
            self._commit_when_due(now)
            self._write_due_dead_letters(now)
            proxy = self._hand_out(now)
            if proxy is not None:
                return proxy
            if now >= deadline:
                return None
            self._apply_brakes()
            with self._lock:
                waiting = any(s.buffer or s.blocked for s in self._partitions.values())
                due = self._scheduler.next_due()
                buffered = sum(len(s.buffer) for s in self._partitions.values() if not s.paused)
                running = self._scheduler.in_flight > 0
            wait = min(IN_FLIGHT_POLL_SLICE if running else POLL_SLICE, deadline - now)
            if waiting:
                # Records wait for a slot, a key, a retry: wait for a job to end
                # (or the next retry to fall due), but keep polling so that the
                # group and librdkafka's fetcher never wait on us.
                until = now + wait if due is None else min(now + wait, due)
                with self._room:
                    if not self._can_start(now):
                        self._room.wait(max(0.0, until - now))
                wait = 0
            # Take only what keeps the buffer under its low mark: records left
            # in librdkafka's queue cost nothing, while pausing to shed them
            # costs a fetch round (up to fetch.wait.max.ms) on resume.
            if wait == 0 and buffered >= self.buffer_low and now < self._next_poll:
                continue  # enough is buffered; poll again at the next slice
            self._next_poll = now + POLL_SLICE
            wanted = min(POLL_BATCH, max(1, self.buffer_low - buffered))
            for record in self._fetch(wanted, wait):
                self._accept(record)

    def _fetch(self, wanted: int, wait: float) -> list[KafkaRecord]:
        """Up to ``wanted`` records, waiting at most ``wait`` seconds for the first.

        ``consume(n, t)`` returns only once it has ``n`` records or ``t`` ran
        out: at 500 jobs/s that held each job for 50 ms on average.
        """
        self.last_poll = time.time()
        records: list[KafkaRecord] = self._consumer.consume(wanted, 0)
        if records or wait <= 0:
            return records
        records = self._consumer.consume(1, wait)
        if records and wanted > 1:
            records += self._consumer.consume(wanted - 1, 0)
        return records

    def _can_start(self, now: float) -> bool:
        with self._lock:
            return self._scheduler.can_start(now)

    def _accept(self, record: KafkaRecord) -> None:
        error = record.error()
        if error is None:
            key = record.key()
            with self._lock:
                self._scheduler.fetched(
                    record.partition() or 0,
                    record.offset() or 0,
                    key if isinstance(key, bytes) else None,
                    record,
                )
            return
        if error.fatal() or error.code() in (
            KafkaError._AUTHENTICATION,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            raise KafkaConnectionError(f"Consumer of {self.topic!r} failed: {error.str()}")
        self.logger.warning("Consumer of %r: %s", self.topic, error.str())

    def _hand_out(self, now: float) -> MessageProxy | None:
        """The next job that may start, if any: a retry that fell due, or the
        next fetched record of a partition, taking partitions in turn."""
        while True:
            with self._lock:
                job = self._scheduler.next_job(now)
                if job is None:
                    return None
                retried, job.detail = job.detail, None
            if isinstance(retried, KafkaMessageProxy):
                retried.failed = False
                return retried
            record = job.record
            try:
                message = decode_message(record.value(), self.queue_name)
                refusal = self.refuse(message)
                if refusal is not None:
                    raise DecodeError(refusal, record.value(), None)
            except DecodeError as e:
                self.logger.error(
                    "Record %s/%s@%s cannot be decoded (%s).",
                    record.topic(),
                    record.partition(),
                    record.offset(),
                    e,
                )
                self._dead_letter(job, message_id="", attempts=0, reason=str(e))
                continue
            return KafkaMessageProxy(message, record, job, self)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        # Nothing to send back: unfinished offsets are never committed,
        # so Kafka hands these records out again after a restart.
        pass

    def close(self) -> None:
        """Commit what is finished, synchronously, and leave the group."""
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
            with self._room:
                self._room.wait(0.05)
        try:
            self._commit(asynchronous=False)
        finally:
            with self._lock:
                self._closed = True
                for partition in list(self._partitions):
                    self._scheduler.forget(partition)
            self._close_client()

    def _close_client(self) -> None:
        if not self._gave_up:
            self._consumer.close()
            return
        # A handle given up on waits, while closing, on requests its coordinator
        # connection never sends: the consumer thread must not wait with it.
        closing = threading.Thread(target=self._consumer.close, name=f"close-{self.topic}", daemon=True)
        closing.start()
        closing.join(self.settle_timeout)
        if closing.is_alive():
            self.logger.warning(
                "The Kafka client of %r that never rejoined did not close within %.0f s: left behind.",
                self.topic,
                self.settle_timeout,
            )
