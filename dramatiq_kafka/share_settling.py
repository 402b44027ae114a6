"""How the end of a share queue's job is carried out: acknowledgements, retries, dead letters.

:class:`ShareSettling` is the half of :class:`~dramatiq_kafka.share_consumer.ShareQueueConsumer`
that Dramatiq's worker threads and the producer's delivery reports call into: it decides
each record's acknowledgement (ACCEPT once Kafka has what must come first, RELEASE or a
copy for a record that did not run to its end), sends retries again with their backoff
and writes dead letters, trying a refused write again after a backoff for as long as the
record's lock lasts.  It
never calls the share consumer itself: the consumer's thread hands the acknowledgements
to Kafka.  The group mode's counterpart is ``settling.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import MessageProxy

from .dead_letters import DeadLetterWriter
from .errors import DeliveryError
from .events import EVENTS
from .outcomes import Outcome, ToDeadLetters, decide, is_failure, note_failure
from .partitions import KafkaMessageProxy, ShareMessageProxy
from .producer import KafkaProducer
from .services import QueueServices
from .share_records import Acknowledge, Delivery, DeliveryState, ShareRecords, Verdict
from .topology import Topology
from .wire import headers_of

__all__ = ["WRITE_BACKOFF", "ShareSettling"]

#: Seconds before a write Kafka refused (a retry's copy, a dead letter, a copy) is tried
#: again; it doubles at each refusal, up to MAX_WRITE_BACKOFF.
WRITE_BACKOFF = 1.0
MAX_WRITE_BACKOFF = 30.0


class ShareSettling:
    """Acks, nacks and delivery reports of a share consumer's jobs (mixed into
    ``ShareQueueConsumer``, which sets the attributes below; see its docstring)."""

    logger: Any
    queue_name: str
    topic: str
    dead_letter_topic: str
    group_id: str
    topology: Topology
    producer: KafkaProducer
    dead_letters: DeadLetterWriter
    services: QueueServices
    records: ShareRecords
    lock: threading.Condition
    closed: bool
    _later: list[tuple[float, Callable[[], None]]]

    def _run_due_writes(self, now: float) -> None:
        with self.lock:
            due = [write for at, write in self._later if at <= now]
            self._later = [(at, write) for at, write in self._later if at > now]
        for write in due:
            write()

    def _attempt(
        self, delivery: Delivery, what: str, send: Callable[[Callable[[object | None], None]], None]
    ) -> None:
        """Carry out ``send`` (it calls its argument with ``None`` once Kafka has the
        record, else with the error), then ACCEPT ``delivery``; after a failure try again
        after a backoff that doubles up to :data:`MAX_WRITE_BACKOFF`, for as long as the
        record is ours (until its lock runs out: ``ShareRecords.let_go``)."""
        attempts = 0

        def attempt() -> None:
            if self.closed or delivery.state is DeliveryState.ACKNOWLEDGED:
                return
            try:
                send(done)
            except Exception as e:
                done(e)

        def done(failure: object | None) -> None:
            nonlocal attempts
            if failure is None:
                self._accept(delivery)
                return
            attempts += 1
            backoff = min(MAX_WRITE_BACKOFF, WRITE_BACKOFF * 2 ** (attempts - 1))
            self.logger.error("Could not %s (%s); trying again in %.0fs.", what, failure, backoff)
            with self.lock:
                self._later.append((time.monotonic() + backoff, attempt))
                self.lock.notify_all()

        attempt()

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, ShareMessageProxy)
        self._end_job(message, rejected=False)

    def nack(self, message: MessageProxy) -> None:
        assert isinstance(message, ShareMessageProxy)
        self._end_job(message, rejected=True)

    def _end_job(self, message: ShareMessageProxy, *, rejected: bool) -> None:
        delivery = message.delivery
        sends = self.producer.take_thread_sends()
        if message._consumer is not self:
            # Handed out by a consumer this one replaced (Dramatiq restarts a failed
            # consumer): that consumer's client gave the record back when it closed.
            self.logger.debug("Ignoring the end of %s: its consumer was replaced.", message)
            return
        with self.lock:
            if delivery.state is not DeliveryState.RUNNING or not self.records.owns(delivery):
                return
            self.records.ended(delivery)
            self.lock.notify_all()
        error: BaseException | None = getattr(message, "_exception", None)
        try:
            if message.cancelled:
                # Skipped before it started: too little of its lock was left.
                self._give_back(delivery)
            elif rejected:
                outcome, message.outcome = message.outcome, None
                if isinstance(outcome, ToDeadLetters):  # its failures counted this run
                    self._give_up(message, error, delivery.failures, outcome.exhausted, outcome.reason)
                else:  # a ``throws`` exception
                    self._give_up(message, error, delivery.failures + 1, False, None)
            elif error is not None:
                self._failed(message, error)
            elif sends is not None and sends.pending:
                sends.when_settled(lambda delivered: self._sends_settled(message, sends.failed, delivered))
            elif sends is not None and sends.failed:
                self._sends_settled(message, sends.failed, delivered=False)
            else:
                self._accept(delivery)
        except Exception:
            self._recover(message)

    def _recover(self, message: ShareMessageProxy) -> None:
        """Settling itself raised (a bug, a broken hook): the record goes back to Kafka."""
        self.logger.exception("Settling %s failed; giving its record back to Kafka.", message.message_id)
        try:
            self._give_back(message.delivery)
        except Exception:
            self.logger.exception("Giving %s back failed; Kafka takes it back after its lock.", message)

    def _sends_settled(self, message: ShareMessageProxy, failed: int, delivered: bool) -> None:
        """Kafka reported on every record the job enqueued (on the producer's report thread)."""
        try:
            if delivered:
                self._accept(message.delivery)
            else:
                error = DeliveryError(f"{failed} message(s) {message.message_id} enqueued were not delivered")
                self._failed(message, error)
        except Exception:
            self._recover(message)

    def _accept(self, delivery: Delivery) -> None:
        with self.lock:
            self.records.acknowledge(delivery, Acknowledge.ACCEPT)
            self.lock.notify_all()

    def _give_back(self, delivery: Delivery) -> None:
        """A record that did not run to its end here: RELEASE it while its delivery
        count allows, else copy it to the queue."""
        with self.lock:
            verdict = self.records.give_back(delivery)
            self.lock.notify_all()
        if verdict is Verdict.COPY:
            self._copy(delivery)

    def decide(self, message: KafkaMessageProxy, error: BaseException) -> Outcome | None:
        """Count a failed run of ``message`` and decide what becomes of it (asked by the
        retries middleware, or else by the ack)."""
        assert isinstance(message, ShareMessageProxy)
        if message.outcome is not None:
            return message.outcome
        delivery = message.delivery
        if is_failure(error):
            delivery.failures += 1
        outcome = decide(
            self.topology.retry_policy(message),
            error,
            failures=delivery.failures,
            failures_in_a_row=delivery.failures,
            shared_budget=False,
            requeue=True,
        )
        note_failure(message.options, outcome, delivery.failures, error)
        message.outcome = outcome
        return outcome

    def _failed(self, message: ShareMessageProxy, error: BaseException) -> None:
        outcome = self.decide(message, error)
        message.outcome = None
        if isinstance(outcome, ToDeadLetters):
            self._give_up(message, error, message.delivery.failures, outcome.exhausted, outcome.reason)
            return
        assert outcome is not None
        delay = outcome.delay
        EVENTS.retried(self.queue_name)
        self.logger.warning(
            "%s failed (%s: %s); sent again to run in %.1fs (attempt %d).",
            message,
            type(error).__name__,
            error,
            delay / 1000,
            message.delivery.failures + 1,
        )

        def send(done: Callable[[object | None], None]) -> None:
            try:
                self.services.requeue(message, delay)
            finally:
                sends = self.producer.take_thread_sends()
            if sends is None:
                done(None)
            else:
                sends.when_settled(lambda delivered: done(None if delivered else "not delivered"))

        self._attempt(message.delivery, f"send {message} again", send)

    def _give_up(
        self,
        message: ShareMessageProxy,
        error: BaseException | None,
        attempts: int,
        exhausted: bool,
        reason: str | None,
    ) -> None:
        self.logger.error(
            "%s failed %d time(s)%s; moving it to %r.",
            message,
            max(attempts, 1),
            f" ({reason})" if reason else "",
            self.dead_letter_topic,
        )
        self._dead_letter(
            message.delivery,
            message_id=message.message_id,
            attempts=max(attempts, 1),
            error=error,
            reason=reason,
        )
        try:
            self.services.dead_lettered(message, exhausted)
        except Exception:
            self.logger.exception("The dead-letter hooks of message %s failed.", message.message_id)

    def _dead_letter(
        self,
        delivery: Delivery,
        *,
        message_id: str,
        attempts: int,
        error: BaseException | None,
        reason: str | None,
    ) -> None:
        """Write the record to the dead letters; ACCEPT it once Kafka has the dead letter."""
        headers = self.dead_letters.headers(
            delivery.record, attempts=attempts, error=error, reason=reason, group_id=self.group_id
        )
        label = message_id or f"{self.topic}/{delivery.partition}@{delivery.offset}"

        def send(done: Callable[[object | None], None]) -> None:
            def written(failure: object | None) -> None:
                if failure is None:
                    EVENTS.dead_lettered(self.queue_name, self.dead_letter_topic)
                done(failure)

            self.dead_letters.write(
                self.dead_letter_topic, delivery.record, headers, message_id=label, on_done=written
            )

        self._attempt(delivery, f"dead-letter {label}", send)

    def _copy(self, delivery: Delivery) -> None:
        """Send the record again to the queue's topic as it is (a new record, delivered
        afresh); ACCEPT the original once Kafka has the copy."""
        record: KafkaRecord = delivery.record
        label = f"{self.topic}/{delivery.partition}@{delivery.offset}"

        def send(done: Callable[[object | None], None]) -> None:
            self.producer.send(
                self.topic,
                record.value(),
                message_id=label,
                key=record.key(),
                headers=headers_of(record),
                on_delivery=done,
                retried_by_caller=True,
            )

        self._attempt(delivery, f"copy {label} back to its queue", send)
