"""How the end of a job is carried out: acks and nacks, retries, requeues, giving up.

:class:`JobSettling` is the half of :class:`~dramatiq_kafka.consumer.KafkaConsumer` that
Dramatiq's worker threads and the producer's delivery reports call into: it counts a failed
run, asks ``outcomes.decide`` what becomes of it, and moves the job through the
:class:`~dramatiq_kafka.scheduling.Scheduler` (retry in place, requeue, dead letter, finished,
handed back).  Whatever goes wrong here, the job ends in a state with a wake-up.  Handing
out jobs is ``consumer.py``; rebalances, commits and writing dead letters are
``topic_partitions.py``.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq.broker import MessageProxy

from .deliveries import ThreadSends
from .errors import DeliveryError
from .events import EVENTS
from .outcomes import Outcome, Requeue, RetryInPlace, ToDeadLetters, decide, is_failure, note_failure
from .partition_state import Job, JobState
from .partitions import KafkaMessageProxy
from .producer import KafkaProducer
from .queue_config import QueueConfig
from .services import QueueServices
from .topic_partitions import TopicPartitions
from .topology import Topology

#: Seconds before a job whose ack itself failed (a bug, a broken hook) runs again.
ACK_ERROR_BACKOFF = 1.0


class JobSettling:
    """Acks, nacks and delivery reports of a consumer's jobs (mixed into ``KafkaConsumer``,
    which sets the attributes below; see its docstring)."""

    logger: Any
    queue_name: str
    producer: KafkaProducer
    topology: Topology
    config: QueueConfig
    services: QueueServices
    partitions: TopicPartitions

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
        with self.partitions.lock:
            if self.partitions.closed or not self.partitions.scheduler.current(job):
                self.logger.debug("Ignoring the end of %s: its partition is no longer ours.", message)
                return
        # Dramatiq 2.2.0's clear_exception() deletes the attribute.
        error: BaseException | None = getattr(message, "_exception", None)
        try:
            if message.cancelled:
                # Its partition was revoked before it started, or it stopped
                # early on revoked(): not done, the new owner runs it.
                with self.partitions.lock:
                    self.partitions.scheduler.hand_back(job)
            elif rejected:
                outcome, message.outcome = message.outcome, None
                if isinstance(outcome, ToDeadLetters):
                    self._give_up(message, error, outcome)
                else:  # a ``throws`` exception
                    self._reject(message, error, exhausted=False)
            elif error is not None:
                self._failed(message, error)
            elif sends is not None and sends.pending:
                with self.partitions.lock:
                    self.partitions.scheduler.awaiting_sends(job)
                sends.when_settled(lambda delivered: self._sends_settled(message, sends, delivered))
            elif sends is not None and sends.failed:
                self._sends_settled(message, sends, delivered=False)
            else:
                self._succeeded(job)
        except Exception:
            self._recover(message)
        self.partitions.wake()

    def _recover(self, message: KafkaMessageProxy) -> None:
        """The ack path itself raised (a bug, a broken hook): run the job again."""
        self.logger.exception(
            "Settling %s failed; it runs again in %.0fs.", message.message_id, ACK_ERROR_BACKOFF
        )
        with self.partitions.lock:
            job = message._job
            if job.state in (JobState.RUNNING, JobState.AWAITING_SENDS):
                job.detail = message
                self.partitions.scheduler.retry(job, time.monotonic() + ACK_ERROR_BACKOFF)

    def _succeeded(self, job: Job) -> None:
        with self.partitions.lock:
            if self.partitions.scheduler.succeeded(job):
                self.partitions.finished_since_commit += 1

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
        self.partitions.wake()

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
        with self.partitions.lock:
            if requeue:
                # A requeued job is a new record: its failures travel in the message.
                job.failures = max(job.failures, int(message.options.get("retries", 0)))
            if not self.partitions.scheduler.failed(job, spent=is_failure(error)):
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
        note_failure(message.options, outcome, failures, error)
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
            self.partitions.dead_letter_topic,
        )
        self._reject(message, error, exhausted=outcome.exhausted, reason=outcome.reason)

    def _retry_in_place(
        self, message: KafkaMessageProxy, error: BaseException, outcome: RetryInPlace
    ) -> None:
        job = message._job
        with self.partitions.lock:
            job.detail = message
            if not self.partitions.scheduler.retry(job, time.monotonic() + outcome.delay / 1000):
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
            self.partitions.wake()

        if sends is None:
            self._succeeded(job)
            return
        with self.partitions.lock:
            self.partitions.scheduler.awaiting_sends(job)
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
        self.partitions.dead_letter(
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
