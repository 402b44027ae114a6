"""How the end of a share queue's job is carried out: acknowledgements, retries, dead letters.

:class:`ShareSettling` is the half of :class:`~dramatiq_kafka.share_consumer.ShareQueueConsumer`
that Dramatiq's worker threads and the producer's delivery reports call into: it decides
each record's acknowledgement (ACCEPT once Kafka has what must come first, RELEASE or a
copy for a record that did not run to its end), sends retries again with their backoff
and writes dead letters, trying a refused write again after :data:`WRITE_BACKOFF`.  It
never calls the share consumer itself: the consumer's thread hands the acknowledgements
to Kafka.  The group mode's counterpart is ``settling.py``.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import MessageProxy

from .dead_letters import DeadLetterWriter
from .errors import DeliveryError
from .events import EVENTS
from .outcomes import Outcome, ToDeadLetters, decide, is_failure
from .partitions import KafkaMessageProxy, ShareMessageProxy
from .producer import KafkaProducer
from .services import QueueServices
from .share_records import Acknowledge, Delivery, DeliveryState, ShareRecords, Verdict
from .topology import Topology
from .wire import headers_of

__all__ = ["WRITE_BACKOFF", "ShareSettling"]

#: Seconds between two tries of a write Kafka refused (a dead letter, a copy).
WRITE_BACKOFF = 1.0


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

    def _later_again(self, write: Callable[[], None]) -> None:
        with self.lock:
            self._later.append((time.monotonic() + WRITE_BACKOFF, write))
            self.lock.notify_all()

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, ShareMessageProxy)
        self._end_job(message, rejected=False)

    def nack(self, message: MessageProxy) -> None:
        assert isinstance(message, ShareMessageProxy)
        self._end_job(message, rejected=True)

    def _end_job(self, message: ShareMessageProxy, *, rejected: bool) -> None:
        delivery = message.delivery
        sends = self.producer.take_thread_sends()
        with self.lock:
            if delivery.state is not DeliveryState.RUNNING:
                return
            self.records.ended(delivery)
            self.lock.notify_all()
        error: BaseException | None = getattr(message, "_exception", None)
        try:
            if rejected:
                outcome, message.outcome = message.outcome, None
                exhausted = isinstance(outcome, ToDeadLetters) and outcome.exhausted
                reason = outcome.reason if isinstance(outcome, ToDeadLetters) else None
                self._give_up(message, error, exhausted=exhausted, reason=reason)
            elif error is not None:
                self._failed(message, error)
            elif sends is not None and sends.pending:
                sends.when_settled(lambda delivered: self._sends_settled(message, sends.failed, delivered))
            elif sends is not None and sends.failed:
                self._sends_settled(message, sends.failed, delivered=False)
            else:
                self._accept(delivery)
        except Exception:
            self.logger.exception("Settling %s failed; giving its record back to Kafka.", message.message_id)
            self._give_back(delivery)

    def _sends_settled(self, message: ShareMessageProxy, failed: int, delivered: bool) -> None:
        if delivered:
            self._accept(message.delivery)
        else:
            self._failed(
                message,
                DeliveryError(f"{failed} message(s) {message.message_id} enqueued were not delivered"),
            )

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
        message.options["retries"] = delivery.failures
        message.options["traceback"] = "".join(traceback.format_exception(error, limit=30))
        if not isinstance(outcome, ToDeadLetters):
            message.options["requeue_timestamp"] = int(time.time() * 1000)
        message.outcome = outcome
        return outcome

    def _failed(self, message: ShareMessageProxy, error: BaseException) -> None:
        outcome = self.decide(message, error)
        message.outcome = None
        if isinstance(outcome, ToDeadLetters):
            self._give_up(message, error, exhausted=outcome.exhausted, reason=outcome.reason)
            return
        assert outcome is not None
        delay = outcome.delay
        try:
            self.services.requeue(message, delay)
        except Exception as e:
            self.producer.take_thread_sends()
            self.logger.error("Could not send %s again (%s); giving its record back to Kafka.", message, e)
            self._give_back(message.delivery)
            return
        sends = self.producer.take_thread_sends()
        EVENTS.retried(self.queue_name)
        self.logger.warning(
            "%s failed (%s: %s); sent again to run in %.1fs (attempt %d).",
            message,
            type(error).__name__,
            error,
            delay / 1000,
            message.delivery.failures + 1,
        )

        def settled(delivered: bool) -> None:
            if delivered:
                self._accept(message.delivery)
            else:
                self.logger.error(
                    "The retry of %s was not delivered; giving its record back to Kafka.", message
                )
                self._give_back(message.delivery)

        if sends is None:
            self._accept(message.delivery)
        else:
            sends.when_settled(settled)

    def _give_up(
        self, message: ShareMessageProxy, error: BaseException | None, *, exhausted: bool, reason: str | None
    ) -> None:
        delivery = message.delivery
        self.logger.error(
            "%s failed %d time(s)%s; moving it to %r.",
            message,
            max(delivery.failures, 1),
            f" ({reason})" if reason else "",
            self.dead_letter_topic,
        )
        self._dead_letter(
            delivery,
            message_id=message.message_id,
            attempts=max(delivery.failures, 1),
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

        def write() -> None:
            if self.closed:
                return
            try:
                self.dead_letters.write(
                    self.dead_letter_topic, delivery.record, headers, message_id=label, on_done=done
                )
            except Exception as e:
                done(e)

        def done(failure: object | None) -> None:
            if failure is None:
                EVENTS.dead_lettered(self.queue_name, self.dead_letter_topic)
                self._accept(delivery)
            else:
                self.logger.error("Could not dead-letter %s (%s); trying again.", label, failure)
                self._later_again(write)

        write()

    def _copy(self, delivery: Delivery) -> None:
        """Send the record again to the queue's topic as it is (a new record, delivered
        afresh); ACCEPT the original once Kafka has the copy."""
        record: KafkaRecord = delivery.record
        label = f"{self.topic}/{delivery.partition}@{delivery.offset}"

        def write() -> None:
            if self.closed:
                return
            try:
                self.producer.send(
                    self.topic,
                    record.value(),
                    message_id=label,
                    key=record.key(),
                    headers=headers_of(record),
                    on_delivery=done,
                    retried_by_caller=True,
                )
            except Exception as e:
                done(e)

        def done(failure: object | None) -> None:
            if failure is None:
                self._accept(delivery)
            else:
                self.logger.error("Could not copy %s back to its queue (%s); trying again.", label, failure)
                self._later_again(write)

        write()
