"""How the end of a job is carried out: acks and nacks, retries, requeues, dead letters.

:class:`JobSettling` is the half of :class:`~dramatiq_kafka.consumer.KafkaConsumer` that
Dramatiq's worker threads and the producer's delivery reports call into: it counts a failed
run, asks ``outcomes.decide`` what becomes of it, and moves the job through the
:class:`~dramatiq_kafka.scheduling.Scheduler` (retry in place, requeue, dead letter, finished,
handed back).  Whatever goes wrong here, the job ends in a state with a wake-up.  The poll
loop, rebalances and commits are in ``consumer.py``.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

from dramatiq.broker import MessageProxy

from .dead_letters import DeadLetterWriter
from .deliveries import ThreadSends
from .errors import DeliveryError
from .events import EVENTS
from .outcomes import Outcome, Requeue, RetryInPlace, ToDeadLetters, decide, is_failure
from .partition_state import Job, JobState
from .partitions import KafkaMessageProxy
from .producer import KafkaProducer
from .queue_config import QueueConfig
from .scheduling import Scheduler
from .services import QueueServices
from .topology import Topology

#: Seconds before a refused dead letter is written again, doubling up to the cap.
DEAD_LETTER_BACKOFF = 1.0
DEAD_LETTER_MAX_BACKOFF = 60.0
#: Seconds before a job whose ack itself failed (a bug, a broken hook) runs again.
ACK_ERROR_BACKOFF = 1.0


class JobSettling:
    """Acks, nacks and delivery reports of a consumer's jobs (mixed into ``KafkaConsumer``,
    which sets the attributes below; see its docstring)."""

    logger: Any
    queue_name: str
    producer: KafkaProducer
    dead_letters: DeadLetterWriter
    dead_letter_topic: str
    topology: Topology
    config: QueueConfig
    services: QueueServices
    _lock: threading.Lock
    _scheduler: Scheduler
    _closed: bool
    _finished_since_commit: int
    _wakeup: threading.Condition
    _woken: bool

    def _wake(self) -> None:
        """Tell the iterating thread a slot, a key or a partition may be free."""
        with self._wakeup:
            self._woken = True
            self._wakeup.notify_all()

    def ack(self, message: MessageProxy) -> None:
        """A job ended without being rejected: done, failed for a retry, cut
        short by an interrupt, or skipped."""
        assert isinstance(message, KafkaMessageProxy)
        self._end_job(message, rejected=False)

    def nack(self, message: MessageProxy) -> None:
        """A job was rejected (a ``throws`` exception): it is dead-lettered."""
        assert isinstance(message, KafkaMessageProxy)
        self._end_job(message, rejected=True)

    def _end_job(self, message: KafkaMessageProxy, *, rejected: bool) -> None:
        """Carry out what the end of a run means for its job; whatever goes
        wrong here, the job ends in a state with a wake-up."""
        job = message._job
        sends = self.producer.take_thread_sends()
        with self._lock:
            if self._closed or not self._scheduler.current(job):
                self.logger.debug("Ignoring the end of %s: its partition is no longer ours.", message)
                return
        # Dramatiq 2.2.0's clear_exception() deletes the attribute.
        error: BaseException | None = getattr(message, "_exception", None)
        try:
            if message.cancelled:
                # Its partition was revoked before it started, or it stopped
                # early on revoked(): not done, the new owner runs it.
                with self._lock:
                    self._scheduler.hand_back(job)
            elif rejected:
                outcome, message.outcome = message.outcome, None
                if isinstance(outcome, ToDeadLetters):
                    self._give_up(message, error, outcome)
                else:  # a ``throws`` exception
                    self._reject(message, error, exhausted=False)
            elif error is not None:
                self._failed(message, error)
            elif sends is not None and sends.pending:
                with self._lock:
                    self._scheduler.awaiting_sends(job)
                sends.when_settled(lambda delivered: self._sends_settled(message, sends, delivered))
            elif sends is not None and sends.failed:
                self._sends_settled(message, sends, delivered=False)
            else:
                self._succeeded(job)
        except Exception:
            self._recover(message)
        self._wake()

    def _recover(self, message: KafkaMessageProxy) -> None:
        """The ack path itself raised (a bug, a broken hook): run the job again."""
        self.logger.exception(
            "Settling %s failed; it runs again in %.0fs.", message.message_id, ACK_ERROR_BACKOFF
        )
        with self._lock:
            job = message._job
            if job.state in (JobState.RUNNING, JobState.AWAITING_SENDS):
                job.detail = message
                self._scheduler.retry(job, time.monotonic() + ACK_ERROR_BACKOFF)

    def _succeeded(self, job: Job) -> None:
        with self._lock:
            if self._scheduler.succeeded(job):
                self._finished_since_commit += 1

    def _sends_settled(self, message: KafkaMessageProxy, sends: ThreadSends, delivered: bool) -> None:
        """Kafka reported on every record the job enqueued (from the
        producer's report thread, or at once)."""
        try:
            if delivered:
                self._succeeded(message._job)
            else:
                error = DeliveryError(
                    f"{sends.failed} of the {sends.sent_count} message(s) {message.message_id} "
                    "enqueued were not delivered"
                )
                self._failed(message, error)
        except Exception:
            self._recover(message)
        self._wake()

    def decide(self, message: KafkaMessageProxy, error: BaseException) -> Outcome | None:
        """Count a failed run of ``message`` and decide what becomes of it;
        ``None`` when its partition moved on.  Asked once per run: by the
        retries middleware (so that a job to be dead-lettered reaches
        Dramatiq's middleware as a failed message), or else by the ack."""
        if message.outcome is not None:
            return message.outcome
        job = message._job
        policy = self.topology.retry_policy(message)
        requeue = self.config.retry_mode == "requeue"
        with self._lock:
            if requeue:
                # A requeued job is a new record: its failures travel in the message.
                job.failures = max(job.failures, int(message.options.get("retries", 0)))
            if not self._scheduler.failed(job, spent=is_failure(error)):
                return None
            failures, failures_in_a_row = job.failures, job.schedule.failures_in_a_row
        outcome = decide(
            policy,
            error,
            failures=failures,
            failures_in_a_row=failures_in_a_row,
            shared_budget=self.config.ordered and not policy.independent,
            requeue=requeue,
        )
        # What Dramatiq's Retries sets, for callbacks and the next run.
        message.options["retries"] = failures
        message.options["traceback"] = "".join(traceback.format_exception(error, limit=30))
        if not isinstance(outcome, ToDeadLetters):
            message.options["requeue_timestamp"] = int(time.time() * 1000)
        message.outcome = outcome
        return outcome

    def _failed(self, message: KafkaMessageProxy, error: BaseException) -> None:
        outcome = self.decide(message, error)
        message.outcome = None  # the next run decides anew
        if outcome is None:
            return  # its partition moved on meanwhile
        if isinstance(outcome, ToDeadLetters):
            self._give_up(message, error, outcome)
        elif isinstance(outcome, Requeue):
            self._requeue(message, error, outcome)
        else:
            self._retry_in_place(message, error, outcome)

    def _give_up(
        self, message: KafkaMessageProxy, error: BaseException | None, outcome: ToDeadLetters
    ) -> None:
        self.logger.error(
            "%s failed %d time(s)%s; moving it to %r.",
            message,
            max(message.failures, 1),
            f" ({outcome.reason})" if outcome.reason else "",
            self.dead_letter_topic,
        )
        self._reject(message, error, exhausted=outcome.exhausted, reason=outcome.reason)

    def _retry_in_place(
        self, message: KafkaMessageProxy, error: BaseException, outcome: RetryInPlace
    ) -> None:
        job = message._job
        with self._lock:
            job.detail = message
            if not self._scheduler.retry(job, time.monotonic() + outcome.delay / 1000):
                job.detail = None
                return
        EVENTS.retried(self.queue_name)
        self.logger.warning(
            "%s %s (%s: %s); partition %d runs it again in %.1fs (attempt %d).",
            message,
            "failed" if outcome.spent else "was interrupted",
            type(error).__name__,
            error,
            job.partition,
            outcome.delay / 1000,
            max(job.runs, job.failures) + 1,  # failures: also those under an earlier owner
        )

    def _requeue(self, message: KafkaMessageProxy, error: BaseException, outcome: Requeue) -> None:
        """Send a failed job again with its backoff as a delay; its offset is
        finished once Kafka has the copy.  If the copy cannot be sent, the
        job is retried in place instead (if the send did land after all, the
        job runs once more: at least once)."""
        job = message._job
        fallback = RetryInPlace(outcome.delay)
        try:
            self.services.requeue(message, outcome.delay)
        except Exception as e:  # Kafka unreachable, a topic that cannot be created, ...
            self.producer.take_thread_sends()
            self.logger.error("Could not send %s again: %s", message, e)
            self._retry_in_place(message, error, fallback)
            return
        sends = self.producer.take_thread_sends()
        EVENTS.retried(self.queue_name)
        self.logger.warning(
            "%s failed (%s: %s); sent again to run in %.1fs (attempt %d).",
            message,
            type(error).__name__,
            error,
            outcome.delay / 1000,
            job.failures + 1,
        )

        def settled(delivered: bool) -> None:
            if delivered:
                self._succeeded(job)
            else:
                self.logger.error("The retry of %s was not delivered; it is retried in place.", message)
                self._retry_in_place(message, error, fallback)
            self._wake()

        if sends is None:
            self._succeeded(job)
            return
        with self._lock:
            self._scheduler.awaiting_sends(job)
        sends.when_settled(settled)

    def _reject(
        self,
        message: KafkaMessageProxy,
        error: BaseException | None,
        *,
        exhausted: bool,
        reason: str | None = None,
    ) -> None:
        job = message._job
        self._dead_letter(
            job,
            message_id=message.message_id,
            attempts=max(job.failures, job.runs),
            error=error,
            reason=reason,
        )
        try:
            self.services.dead_lettered(message, exhausted)
        except Exception:
            # The dead letter is on its way: a broken hook must not stop it.
            self.logger.exception("The dead-letter hooks of message %s failed.", message.message_id)

    def _dead_letter(
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
        with self._lock:
            if not self._scheduler.dead_lettering(job):
                return
            job.detail = (message_id, headers)
        self._write_dead_letter(job)

    def _write_dead_letter(self, job: Job) -> None:
        message_id, headers = job.detail

        def done(error: object | None) -> None:
            if error is None:
                with self._lock:
                    written = self._scheduler.dead_lettered(job)
                    self._finished_since_commit += written
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
                with self._lock:
                    self._scheduler.dead_letter_refused(job, time.monotonic() + backoff)
            self._wake()

        self.dead_letters.write(
            self.dead_letter_topic, job.record, headers, message_id=message_id, on_done=done
        )

    def _write_due_dead_letters(self, now: float) -> None:
        with self._lock:
            due = self._scheduler.dead_letters_due(now)
        for job in due:
            self._write_dead_letter(job)
