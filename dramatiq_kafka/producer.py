"""One confluent-kafka producer per process, with delivery reports.

The producer is created on first use in each process, so a broker built
before ``dramatiq --processes N`` forks never shares librdkafka's threads
with a child.  A daemon thread serves delivery reports, so failures of
asynchronous sends are seen even when the application never sends again.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from dramatiq.logging import get_logger

from .client_errors import ClientErrors
from .client_log import create_client
from .deliveries import (
    DEFAULT_MESSAGE_MAX_BYTES,
    DeliveryReports,
    OutgoingRecord,
    ThreadSends,
    failure_reason,
)
from .errors import BufferFull, DeliveryError, DeliveryTimeout, KafkaConnectionError
from .events import EVENTS
from .wire import Headers, message_id_of

__all__ = ["PRODUCER_DEFAULTS", "DeliveryCallback", "KafkaProducer", "OutgoingRecord", "ThreadSends"]

#: Called with the delivery error (or ``None``) of one record.
DeliveryCallback = Callable[[KafkaError | None], None]

#: Settings every producer gets; the user's config may override them.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 0,
    "compression.type": "lz4",
    # Keyless jobs go to a random partition each, not in sticky batches
    # that can leave a partition (and the worker owning it) idle.
    "sticky.partitioning.linger.ms": 0,
}

#: Seconds between two looks for an authentication failure while waiting.
AUTH_CHECK_SLICE = 0.25
#: Seconds the exit flush goes on once librdkafka said every broker is
#: down (and nothing was delivered since): the records are lost either way,
#: and a process must not hang for ``flush_timeout`` on its way out.
EXIT_UNREACHABLE_GRACE = 5.0


#: A sending thread serves the delivery reports waiting for it after this
#: many sends.  Served there, with the GIL already held, a report costs a
#: function call; served by another thread, a GIL handover each, which
#: made async sends a third slower on two cores.
SENDS_PER_POLL = 64
#: Seconds between polls of the delivery-report thread, which serves the
#: reports nobody else did (an application that sent and went idle).
REPORT_THREAD_INTERVAL = 0.02

# The pid, kept up to date by a fork hook: reading it is on every send's path.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


class KafkaProducer:
    """A lazily created, fork-safe wrapper around ``confluent_kafka.Producer``.

    Parameters:
      config(dict): librdkafka settings (``bootstrap.servers`` included).
      flush_timeout(float): Seconds ``flush()`` waits at exit.
    """

    def __init__(self, config: dict[str, Any], *, flush_timeout: float = 30.0) -> None:
        self.logger = get_logger(__name__, type(self))
        self.config = {**PRODUCER_DEFAULTS, **config}
        self.flush_timeout = flush_timeout
        self.reports = DeliveryReports()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._producer: Producer | None = None
        self._closed = threading.Event()
        self._thread_sends = threading.local()
        # The thread serving delivery reports for every thread waiting on its sends,
        # and what it tells them after each poll.
        self._serving = threading.Lock()
        self._served = threading.Condition()
        # Shared by all threads; a lost increment only shifts a poll.
        self._sends_since_poll = 0
        self.errors = ClientErrors(self.config, "producer")

    @property
    def producer(self) -> Producer:
        """The producer of the current process, created on first use."""
        producer = self._producer
        if producer is not None and self._pid == _pid[0]:
            return producer
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                self._producer = create_client(Producer, {**self.config, "error_cb": self.errors}, "producer")
                self._pid = os.getpid()
                self._closed = threading.Event()
                threading.Thread(
                    target=self._serve_reports,
                    args=(self._producer, self._closed),
                    name="dramatiq-kafka-delivery-reports",
                    daemon=True,
                ).start()
                atexit.register(self._flush_at_exit, self._producer)
            return self._producer

    @property
    def max_bytes(self) -> object:
        """The producer's ``message.max.bytes``, as configured."""
        return self.config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)

    def start(self) -> None:
        """Create the producer of this process now instead of at its first send.

        librdkafka's idempotent producer cannot send before it has a producer id.  Created
        by a send, it asks before its connection is up and then retries on a 500 ms timer:
        the first record of the process was delivered 0.5-1 s after ``send``.  Created
        50 ms or more ahead, it has its id when the first send comes.
        """
        self.producer  # noqa: B018 - the property creates it

    def _serve_reports(self, producer: Producer, closed: threading.Event) -> None:
        # Not a blocking poll: librdkafka would wake it for every report,
        # racing the sending threads for the GIL.
        while not closed.wait(REPORT_THREAD_INTERVAL):
            self._poll(producer, 0)

    def _poll(self, producer: Producer, timeout: float) -> None:
        try:
            served = producer.poll(timeout)
        except Exception:
            # poll() re-raises what a callback raised; the caller must live on.
            self.logger.exception("A delivery callback failed.")
            served = 1
        if served:
            with self._served:
                self._served.notify_all()

    def _serve_until(
        self, done: Callable[[], bool], timeout: float, check: Callable[[], None] | None = None
    ) -> bool:
        """Serve delivery reports in this thread until ``done()``, at most
        ``timeout`` seconds; return ``done()``.  ``check`` runs between
        polls and may raise."""
        producer = self._producer
        deadline = time.monotonic() + timeout
        while not done():
            if check is not None:
                check()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or producer is None:
                return done()
            # One waiting thread polls and the others wait for it to say it served
            # reports: a report is served by whichever thread polls, and one polling
            # for another's report returned only once its own came (or 50 ms).
            if self._serving.acquire(blocking=False):
                try:
                    # Returns as soon as a report was served.
                    self._poll(producer, min(remaining, AUTH_CHECK_SLICE, 0.05))
                finally:
                    self._serving.release()
                with self._served:
                    self._served.notify()  # another waiting thread polls now
            else:
                with self._served:
                    if not done():
                        self._served.wait(min(remaining, 0.05))
        return True

    def _sends_of_this_thread(self) -> ThreadSends:
        sends: ThreadSends | None = getattr(self._thread_sends, "sends", None)
        if sends is None:
            sends = self._thread_sends.sends = ThreadSends(self._async_send_reported)
        return sends

    def _async_send_reported(self, error: KafkaError | None, record: Message) -> None:
        if error is None:
            # Its lock only when there is something to clear or to learn: that Kafka was
            # reached (a Kafka gone later is no wrong address, see flush()).
            if self.errors.failure is not None or not self.errors.reached:
                self.errors.succeeded()
            return
        topic = record.topic() or ""
        EVENTS.delivery_failed(topic)
        message_id = message_id_of(record.value())
        # A delivery report carries no headers: the size named for a record
        # too large counts its value and key.
        reason = failure_reason(
            error, topic, record.value(), record.key(), None, local=False, max_bytes=self.max_bytes
        )
        self.reports.record(message_id, reason)
        self.logger.error("Failed to deliver message %s to %r: %s", message_id, topic, reason)

    def take_thread_sends(self) -> ThreadSends | None:
        """The sends this thread made since the last call, detached: the
        thread's next send starts a new count."""
        sends: ThreadSends | None = getattr(self._thread_sends, "sends", None)
        self._thread_sends.sends = None
        return sends

    def settle_thread_sends(self, timeout: float) -> bool:
        """Wait until the sends this thread made since the last call are
        delivered; return whether all of them were."""
        sends: ThreadSends | None = getattr(self._thread_sends, "sends", None)
        if sends is None:
            return True
        self._thread_sends.sends = None
        self._serve_until(lambda: sends.reported_count >= sends.sent_count, timeout)
        return sends.wait(0)

    def _flush_at_exit(self, producer: Producer) -> None:
        if self._producer is not producer or self._pid != os.getpid():
            return
        deadline = time.monotonic() + self.flush_timeout
        while True:
            remaining: int = producer.flush(max(0.0, min(AUTH_CHECK_SLICE, deadline - time.monotonic())))
            if not remaining or time.monotonic() >= deadline:
                break
            if self.errors.down_for() >= EXIT_UNREACHABLE_GRACE:
                self.logger.error(
                    "%d record(s) were not delivered at exit and are lost: %s (gave up %.0f s after "
                    "all brokers went down).",
                    remaining,
                    self.errors.unreachable(),
                    EXIT_UNREACHABLE_GRACE,
                )
                return
        if remaining:
            self.logger.error("%d record(s) were still undelivered at exit and are lost.", remaining)

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        message_id: str,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        retried_by_caller: bool = False,
    ) -> None:
        """Hand a record to librdkafka and return at once.

        A failed delivery is logged and counted for :meth:`flush` to raise,
        and the thread's next :meth:`settle_thread_sends` waits for it; not
        so when ``retried_by_caller`` (the caller sees every outcome through
        ``on_delivery`` and sends again).  ``on_delivery`` is called from the
        delivery-report thread.

        Raises:
          DeliveryError: When librdkafka refuses the record outright
            (too large, unknown topic, local queue full for too long).
        """

        sends = ThreadSends() if retried_by_caller else self._sends_of_this_thread()
        sends.sent()
        report: Callable[[KafkaError | None, Message], None]
        if on_delivery is None and not retried_by_caller:
            report = sends.callback
        else:

            def report(error: KafkaError | None, _record: Message) -> None:
                sends.reported(error)
                if error is None:
                    self.errors.succeeded()
                else:
                    EVENTS.delivery_failed(topic)
                if error is not None and not retried_by_caller:
                    reason = failure_reason(
                        error, topic, value, key, headers, local=False, max_bytes=self.max_bytes
                    )
                    self.reports.record(message_id, reason)
                    self.logger.error("Failed to deliver message %s to %r: %s", message_id, topic, reason)
                if on_delivery is not None:
                    on_delivery(error)

        producer = self.producer
        try:
            if partition is None:
                producer.produce(topic, value, key, headers=headers, on_delivery=report)
            else:
                producer.produce(topic, value, key, partition=partition, headers=headers, on_delivery=report)
        except BufferError:
            # Waiting for room would block the caller for as long as Kafka is
            # away: refuse instead, so the caller decides.
            sends.reported(None)
            raise BufferFull(
                f"Message {message_id} was not sent: the producer's local queue is full "
                f"(queue.buffering.max.messages / queue.buffering.max.kbytes); Kafka is slow "
                f"or unreachable at {self.config.get('bootstrap.servers')!r}.",
                [(message_id, "local queue full")],
            ) from None
        except KafkaException as e:
            sends.reported(e.args[0])
            reason = failure_reason(
                e.args[0], topic, value, key, headers, local=True, max_bytes=self.max_bytes
            )
            raise DeliveryError(
                f"Kafka refused message {message_id}: {reason}", [(message_id, reason)]
            ) from e

        self._sends_since_poll += 1
        if self._sends_since_poll >= SENDS_PER_POLL:
            self._sends_since_poll = 0
            self._poll(producer, 0)

    def send_all(self, records: list[OutgoingRecord], *, timeout: float | None = None) -> None:
        """Send records; with a ``timeout``, wait until Kafka acknowledged
        every one of them.

        Raises:
          DeliveryError: Naming each record that was not delivered, and why.
          DeliveryTimeout: When the only failures are reports that did not
            come within ``timeout`` seconds (those records may still be
            delivered).
          AuthenticationError: As soon as librdkafka reports that Kafka
            refused the credentials, while records are still unacknowledged
            (they stay queued until ``message.timeout.ms``).
        """
        # Without a timeout there is nothing to wait for: no callbacks (the common, hot case).
        reported = threading.Lock()
        outcomes: dict[str, KafkaError | None] = {}

        def on_delivery_of(message_id: str) -> DeliveryCallback:
            def on_delivery(error: KafkaError | None) -> None:
                with reported:
                    outcomes[message_id] = error

            return on_delivery

        failures: list[tuple[str, str]] = []
        for record in records:
            try:
                self.send(
                    record.topic,
                    record.value,
                    message_id=record.message_id,
                    key=record.key,
                    headers=record.headers,
                    partition=record.partition,
                    on_delivery=None if timeout is None else on_delivery_of(record.message_id),
                )
            except DeliveryError as e:
                if timeout is None:
                    raise
                # Refused before it left: its reason, not the error's text (which names the id again).
                failures.extend(e.failures)
        if timeout is None:
            return

        def all_reported() -> bool:
            with reported:
                return len(outcomes) + len(failures) >= len(records)

        # Checked between reports: an authentication failure is no delivery report.
        self._serve_until(all_reported, timeout, check=self.errors.check)
        with reported:
            by_id = {record.message_id: record for record in records}
            for message_id, error in outcomes.items():
                if error is not None:
                    r = by_id[message_id]
                    reason = failure_reason(
                        error, r.topic, r.value, r.key, r.headers, local=False, max_bytes=self.max_bytes
                    )
                    failures.append((message_id, reason))
            refused = {message_id for message_id, _ in failures}
            unreported = [
                (r.message_id, "timeout")
                for r in records
                if r.message_id not in outcomes and r.message_id not in refused
            ]
        if not failures and not unreported:
            return
        lines = "\n  ".join(f"{message_id}: {reason}" for message_id, reason in failures + unreported)
        if not unreported and len(outcomes) == 0:
            # Nothing was sent at all: no wait, no timeout to speak of.
            summary = f"{len(failures)} of {len(records)} message(s) not sent:\n  {lines}"
        else:
            summary = (
                f"{len(failures) + len(unreported)} of {len(records)} message(s) not acknowledged within "
                f"{timeout:g}s (bootstrap servers {self.config.get('bootstrap.servers')!r}):\n  {lines}"
            )
        raise (DeliveryError if failures else DeliveryTimeout)(summary, failures + unreported)

    def flush(self, timeout: float | None = None, *, down_grace: float | None = None) -> None:
        """Wait for every pending record, then report async failures.

        Parameters:
          timeout(float): The most seconds to wait (``flush_timeout`` by default).
          down_grace(float): Stop waiting once every broker was down this long.

        Raises:
          DeliveryError: Listing every async send that failed since the
            last flush, or the records still pending at the timeout.
          AuthenticationError: When Kafka refuses the credentials while
            records are pending.
        """
        producer = self._producer
        remaining = 0
        if producer is not None and self._pid == os.getpid():
            deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
            while True:
                remaining = producer.flush(max(0.0, min(AUTH_CHECK_SLICE, deadline - time.monotonic())))
                if not remaining or time.monotonic() >= deadline:
                    break
                if down_grace is not None and self.errors.down_for() >= down_grace:
                    break  # every broker down that long: what is pending is reported, not waited for
                self.errors.check()
                if not self.errors.reached and self.errors.down_for() > 0:
                    # Never delivered anything and every broker refuses: a wrong address.
                    self.reports.take()
                    raise self.errors.unreachable_pending(remaining)
        failures = self.reports.take()
        if failures or remaining:
            lines = [f"{message_id}: {reason}" for message_id, reason in failures]
            if remaining:
                lines.append(f"{remaining} record(s) still pending after the timeout")
            raise DeliveryError("Some messages were not delivered:\n  " + "\n  ".join(lines), failures)

    def close(self, timeout: float | None = None) -> None:
        """Flush (logging what was not delivered) and stop serving reports."""
        try:
            # Like the exit flush: a Kafka gone for EXIT_UNREACHABLE_GRACE is not waited for.
            self.flush(timeout, down_grace=EXIT_UNREACHABLE_GRACE)
        except (DeliveryError, KafkaConnectionError) as e:
            self.logger.error("%s", e)
        finally:
            self._closed.set()
            self._producer = None
