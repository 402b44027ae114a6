"""The Dramatiq consumer of one queue's topic.

The thread that iterates it (Dramatiq's ``ConsumerThread``) polls Kafka on
every call, whatever the jobs are doing: the group membership never depends
on how long a job runs.  Brakes (a full buffer, a partition waiting for a
retry or a dead letter) are applied with ``pause()``/``resume()`` per
partition, never by not polling.

A failed job is retried in place: its partition starts no other job, waits
out the backoff, and runs the same record again; after its retries it goes
to the dead-letter topic.
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
from .errors import DeliveryError, KafkaConnectionError
from .events import EVENTS
from .partitions import KafkaMessageProxy, PartitionState
from .producer import KafkaProducer
from .retries import RetryPolicy
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
#: The most records fetched by one poll.
POLL_BATCH = 500

#: Decides how a failed message is retried.
RetryPolicyFor = Callable[[MessageProxy], RetryPolicy]


class KafkaConsumer(Consumer):
    """Consumes one topic as a member of the workers' consumer group.

    Parameters:
      queue_name(str): The Dramatiq queue (what ``message.queue_name`` says).
      topic(str): The topic behind it.
      config(dict): librdkafka consumer settings, ``group.id`` included.
      prefetch(int): The most jobs running or waiting in the worker at once.
      timeout(int): Milliseconds ``__next__`` waits before returning ``None``.
      producer(KafkaProducer): The process's producer: an ack waits until
        the records its job enqueued are in Kafka.
      dead_letters(DeadLetterWriter): Writes records that fail for good or
        cannot be decoded.
      dead_letter_topic(str): The topic they go to.
      retry_policy(callable): The :class:`RetryPolicy` of a failed message.
      refuse(callable): Why a decoded message is no job of this queue, or
        ``None``; a refused message is dead-lettered unrun.
      ordered(bool): Run one job per partition at a time.
      settle_timeout(float): Seconds an ack waits for its job's sends.
      commit_interval(float): Seconds between asynchronous commits.
      commit_every(int): Commit sooner once this many jobs finished, so a
        crash repeats at most this many finished jobs (plus those that
        finished behind a job still running).
      revoke_grace(float): Seconds a revocation waits for the partitions'
        running jobs to finish (and be committed) before letting them go.
      on_dead_letter(callable): Called with each dead-lettered message.
      retry_mode(str): ``"pause"`` retries a failed job in place;
        ``"requeue"`` hands it to ``send_retry`` and moves on.
      send_retry(callable): Sends a failed message again, with a delay in
        milliseconds (``retry_mode="requeue"``).
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
        retry_policy: RetryPolicyFor = lambda message: RetryPolicy(),
        refuse: Callable[[Message[Any]], str | None] = lambda message: None,
        ordered: bool = False,
        settle_timeout: float = 10.0,
        commit_interval: float = 0.5,
        commit_every: int = 100,
        revoke_grace: float = 5.0,
        on_dead_letter: Callable[[MessageProxy], None] | None = None,
        retry_mode: str = "pause",
        send_retry: Callable[[KafkaMessageProxy, int], object] | None = None,
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({queue_name})")
        self.queue_name = queue_name
        self.topic = topic
        self.prefetch = max(prefetch, 1)
        # Fetched records kept ready, in all: polls take no more than this.
        self.buffer_low = max(self.prefetch, POLL_BATCH // 2)
        # A partition whose jobs cannot start (every slot held by long jobs)
        # still gets a record per poll; past this its fetching is paused.
        # High, because each resume costs a fetch round (fetch.wait.max.ms).
        self.partition_buffer = max(4 * self.prefetch, 1000)
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

        # Guards the partition table and every PartitionState: acks arrive
        # from worker threads, rebalance callbacks run on the polling thread.
        self._lock = threading.Lock()
        self._partitions: dict[int, PartitionState] = {}
        self._cursor = 0
        # Notified whenever a job ends: a slot or a key may be free again.
        self._room = threading.Condition()
        self._finished_since_commit = 0
        self._next_commit = time.monotonic() + commit_interval
        self._next_poll = 0.0
        self._closed = False

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

    # -- rebalance -----------------------------------------------------------------------------------

    def _on_assign(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        self.logger.info(
            "Assigned partitions %s of %r.", sorted(tp.partition for tp in partitions), self.topic
        )
        with self._lock:
            for tp in partitions:
                self._partitions[tp.partition] = PartitionState(tp.partition)

    def _on_revoke(self, consumer: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        self.logger.info(
            "Partitions %s of %r revoked.", sorted(tp.partition for tp in partitions), self.topic
        )
        with self._lock:
            states = [self._partitions[tp.partition] for tp in partitions if tp.partition in self._partitions]
            for state in states:
                state.revoked = True
        # Jobs already running may finish within the grace period: their
        # offsets are committed below and the new owner does not repeat them.
        # Long ones see revoked() and may stop early.
        deadline = time.monotonic() + self.revoke_grace
        while time.monotonic() < deadline and any(state.running for state in states):
            with self._room:
                self._room.wait(0.05)
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
        # Fetched records, a pending retry and the offsets go with the
        # partition: its new owner starts again from the committed offset.
        with self._lock:
            for tp in partitions:
                state = self._partitions.pop(tp.partition, None)
                if state is not None:
                    state.revoked = True
                    state.owned = False

    # -- committing ----------------------------------------------------------------------------------

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self.logger.warning("Offset commit failed (will retry): %s", error)
            return
        with self._lock:
            for tp in partitions:
                state = self._partitions.get(tp.partition)
                if tp.error is None and state is not None:
                    state.offsets.committed(tp.offset)

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

    def _commit_position(self, state: PartitionState) -> TopicPartition | None:
        """What to commit for ``state`` now, if anything (under the lock)."""
        watermark = state.offsets.commit_candidate()
        return None if watermark is None else TopicPartition(self.topic, state.partition, watermark)

    # -- flow control --------------------------------------------------------------------------------

    def _apply_brakes(self) -> None:
        """Pause fetching for partitions that are blocked or whose buffer is
        full; resume the others."""
        changes: dict[bool, list[TopicPartition]] = {True: [], False: []}
        with self._lock:
            for state in self._partitions.values():
                pause = self._should_pause(state)
                if pause != state.paused:
                    state.paused = pause
                    changes[pause].append(TopicPartition(self.topic, state.partition))
        if changes[True] or changes[False]:
            EVENTS.paused(self.queue_name, sum(s.paused for s in list(self._partitions.values())))
        if changes[True]:
            self._consumer.pause(changes[True])
        if changes[False]:
            self._consumer.resume(changes[False])

    def _should_pause(self, state: PartitionState) -> bool:
        return state.blocked or len(state.buffer) >= self.partition_buffer

    def _has_room(self) -> bool:
        return sum(state.running for state in self._partitions.values()) < self.prefetch

    def _startable(self, state: PartitionState, now: float) -> bool:
        """Whether the next job of ``state`` may start now."""
        if state.retry is not None:
            return now >= state.retry_at
        if state.dead_letters_pending or not state.buffer:
            return False
        if self.ordered and state.offsets.unfinished:
            return False
        key = state.buffer[0].key()
        # Jobs sharing a key never run at once; a later key waits its turn
        # behind a busy one, which keeps each key in order.
        return not (isinstance(key, bytes) and state.keys[key])

    # -- the iterator --------------------------------------------------------------------------------

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            self._commit_when_due(now)
            proxy = self._hand_out(now)
            if proxy is not None:
                return proxy
            if now >= deadline:
                return None
            self._apply_brakes()
            wait = min(POLL_SLICE, deadline - now)
            with self._lock:
                waiting = [s for s in self._partitions.values() if s.buffer or s.retry is not None]
                buffered = sum(len(s.buffer) for s in self._partitions.values() if not s.paused)
            if waiting:
                # Records wait for a slot, a key, a retry: wait for a job to end
                # (or the next retry to fall due), but keep polling so that the
                # group and librdkafka's fetcher never wait on us.
                due = min((s.retry_at for s in waiting if s.retry is not None), default=now + wait)
                with self._room:
                    if not self._hand_out_possible(now):
                        self._room.wait(max(0.0, min(wait, due - now)))
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
        records: list[KafkaRecord] = self._consumer.consume(wanted, 0)
        if records or wait <= 0:
            return records
        records = self._consumer.consume(1, wait)
        if records and wanted > 1:
            records += self._consumer.consume(wanted - 1, 0)
        return records

    def _commit_when_due(self, now: float) -> None:
        if now >= self._next_commit or self._finished_since_commit >= self.commit_every:
            self._finished_since_commit = 0
            self._commit()
            self._next_commit = now + self.commit_interval

    def _hand_out_possible(self, now: float) -> bool:
        with self._lock:
            return self._has_room() and any(self._startable(s, now) for s in self._partitions.values())

    def _accept(self, record: KafkaRecord) -> None:
        error = record.error()
        if error is None:
            with self._lock:
                state = self._partitions.get(record.partition() or 0)
                if state is not None:
                    state.buffer.append(record)
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
                if not self._has_room():
                    return None
                states = list(self._partitions.values())
                for i in range(len(states)):
                    state = states[(self._cursor + i) % len(states)]
                    if self._startable(state, now):
                        self._cursor += i + 1
                        break
                else:
                    return None
                if state.retry is not None:
                    proxy, state.retry = state.retry, None
                    self._start(state, proxy.record)
                    return proxy
                record = state.buffer.popleft()
                state.offsets.track(record.offset() or 0)
                self._start(state, record)
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
                self._release_key(state, record)
                self._dead_letter(state, record, message_id="", attempts=0, reason=str(e))
                continue
            return KafkaMessageProxy(message, record, state)

    @staticmethod
    def _start(state: PartitionState, record: KafkaRecord) -> None:
        key = record.key()
        if isinstance(key, bytes):
            state.keys[key] += 1

    def _release_key(self, state: PartitionState, record: KafkaRecord) -> None:
        """A run is over, whatever its outcome: its key is free."""
        key = record.key()
        if isinstance(key, bytes):
            with self._lock:
                state.keys[key] -= 1
                if state.keys[key] <= 0:
                    del state.keys[key]

    def _wake(self) -> None:
        """Tell the polling thread a slot, a key or a partition may be free."""
        with self._room:
            self._room.notify()

    # -- acks ----------------------------------------------------------------------------------------

    def _owns(self, proxy: KafkaMessageProxy) -> bool:
        with self._lock:
            return not self._closed and self._partitions.get(proxy.partition) is proxy._state

    def ack(self, message: MessageProxy) -> None:
        """A job ended without being rejected: done, failed for a retry, or
        stopped by the interpreter exiting."""
        assert isinstance(message, KafkaMessageProxy)
        settled = self.producer.settle_thread_sends(self.settle_timeout)
        if not self._owns(message):
            self.logger.debug("Ignoring ack of %s: its partition is no longer ours.", message.message_id)
            return
        state, error = message._state, message._exception
        self._release_key(state, message.record)
        if message.cancelled:
            # Its partition was revoked before it started, or it stopped
            # early on revoked(): not done, the new owner runs it.
            with self._lock:
                state.abandoned += 1
        elif error is not None and isinstance(error, Exception):
            if self.retry_mode == "requeue":
                self._requeue(message, error)
            else:
                self._failed(message, error)
        elif error is not None or not settled:
            # SystemExit, KeyboardInterrupt: the job did not fail, it was cut
            # short.  Or a job it enqueued is not in Kafka, and committing
            # could lose that one.  Never committed, never dead-lettered: it
            # runs again after a restart.
            with self._lock:
                state.abandoned += 1
            reason = type(error).__name__ if error is not None else "unacknowledged sends"
            self.logger.error("%s was cut short (%s); its offset stays uncommitted.", message, reason)
        else:
            with self._lock:
                if message.offset == state.failing_offset:
                    state.failing_offset = None
                elif message.failures == 0 and state.failing_offset is None:
                    state.streak = 0
            self._finish(state, message.offset)
        self._wake()

    def _failed(self, message: KafkaMessageProxy, error: Exception) -> None:
        state = message._state
        policy = self.retry_policy(message)
        with self._lock:
            message.failures += 1
            state.streak += 1
            budget = message.failures if policy.independent else state.streak
            retry = policy.should_retry(budget, error)
            if retry:
                delay = policy.backoff(message.failures) / 1000
                message.options["retries"] = message.failures
                state.failing_offset = message.offset
                state.retry = message
                state.retry_at = time.monotonic() + delay
            else:
                state.streak = 0
                state.failing_offset = None
        if retry:
            EVENTS.retried(self.queue_name)
            self.logger.warning(
                "%s failed (%s: %s); partition %d waits %.1fs and runs it again (attempt %d).",
                message,
                type(error).__name__,
                error,
                state.partition,
                delay,
                message.failures + 1,
            )
            return
        self.logger.error(
            "%s failed %d time(s); moving it to %r.", message, message.failures, self.dead_letter_topic
        )
        self._reject(message)

    def _requeue(self, message: KafkaMessageProxy, error: Exception) -> None:
        """Send a failed job again with its backoff as a delay, and move on;
        each job has its own budget, counted in the message."""
        policy = self.retry_policy(message)
        failures = int(message.options.get("retries", 0)) + 1
        if not policy.should_retry(failures, error):
            message.failures = failures
            self.logger.error(
                "%s failed %d time(s); moving it to %r.", message, failures, self.dead_letter_topic
            )
            self._reject(message)
            return
        delay = policy.backoff(failures)
        assert self.send_retry is not None
        message.failures = failures
        try:
            self.send_retry(message, delay)
            sent = self.producer.settle_thread_sends(self.settle_timeout)
        except Exception as e:  # Kafka unreachable, a topic that cannot be created, ...
            self.logger.error("Could not send %s again: %s", message, e)
            sent = False
        if not sent:
            # Its retry may not be in Kafka: retry it in place instead.  If
            # the send did land after all, the job runs once more (at least once).
            message.failures = failures - 1
            self._failed(message, error)
            return
        EVENTS.retried(self.queue_name)
        self.logger.warning(
            "%s failed (%s: %s); sent again to run in %.1fs (attempt %d).",
            message,
            type(error).__name__,
            error,
            delay / 1000,
            failures + 1,
        )
        self._finish(message._state, message.offset)

    def nack(self, message: MessageProxy) -> None:
        """A job was rejected (an unknown actor, a ``throws`` exception)."""
        assert isinstance(message, KafkaMessageProxy)
        self.producer.settle_thread_sends(self.settle_timeout)
        if not self._owns(message):
            self.logger.debug("Ignoring nack of %s: its partition is no longer ours.", message.message_id)
            return
        self._release_key(message._state, message.record)
        self._reject(message)
        self._wake()

    def _reject(self, message: KafkaMessageProxy) -> None:
        if self.on_dead_letter is not None:
            self.on_dead_letter(message)
        self._dead_letter(
            message._state,
            message.record,
            message_id=message.message_id,
            attempts=message.failures or int(message.options.get("retries", 0)),
            error=message._exception,
        )

    def _dead_letter(
        self,
        state: PartitionState,
        record: KafkaRecord,
        *,
        message_id: str,
        attempts: int,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        """Write ``record`` to the dead-letter topic; the partition starts no
        job until Kafka has it, then its offset is finished."""
        offset = record.offset() or 0
        with self._lock:
            state.dead_letters_pending += 1

        def written() -> None:
            with self._lock:
                state.dead_letters_pending -= 1
            EVENTS.dead_lettered(self.queue_name, self.dead_letter_topic)
            self._finish(state, offset)
            self._wake()

        self.dead_letters.write(
            self.dead_letter_topic,
            record,
            message_id=message_id,
            attempts=attempts,
            error=error,
            reason=reason,
            on_written=written,
        )

    def _finish(self, state: PartitionState, offset: int) -> None:
        state.offsets.mark_done(offset)
        self._finished_since_commit += 1

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
                for state in self._partitions.values():
                    state.revoked = True
                    state.owned = False
                self._partitions.clear()
            self._consumer.close()
