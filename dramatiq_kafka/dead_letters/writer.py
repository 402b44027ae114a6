"""Writing dead letters: the original record plus where it came from and why.

The headers a dead letter gets (``headers.py`` names them), the smaller
copy of a record too large to be written whole, and the writer the
consumer uses.  Reading and replaying dead letters is in ``reader.py``
and ``replay.py``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Message as KafkaRecord
from dramatiq.logging import get_logger

from ..errors import DeliveryError
from ..producer import KafkaProducer
from ..wire import Headers, headers_of
from .headers import (
    DEAD_LETTER_OMITTED,
    ERROR_MESSAGE,
    ERROR_TRACEBACK,
    ERROR_TYPE,
    SOURCE_ATTEMPTS,
    SOURCE_CONSUMER_GROUP,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)

#: The longest traceback kept in a dead-letter header, in bytes.
MAX_TRACEBACK_BYTES = 8192
#: The longest error message kept in a dead-letter header, in bytes.
MAX_ERROR_MESSAGE_BYTES = 1024
#: The largest original header (or key) kept when a record is too large to copy.
MAX_KEPT_HEADER_BYTES = 1024
#: Why Kafka (or librdkafka, before sending) refuses a record for its size:
#: no retry can succeed, the record must be made smaller.
SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


def dead_letter_headers(
    record: KafkaRecord,
    *,
    group_id: str,
    attempts: int,
    error: BaseException | None,
    reason: str | None = None,
) -> Headers:
    """The original headers plus the record's origin and the error.

    Parameters:
      record: The record being dead-lettered, as it was consumed.
      group_id: The consumer group that gave up on it.
      attempts: How many times its job ran.
      error: The exception of its last attempt, if any.
      reason: Why it is dead-lettered when there is no exception, or
        what else went wrong (a hook that raised), added to its message.
    """
    headers = headers_of(record)
    headers += [
        (SOURCE_TOPIC, str(record.topic()).encode()),
        (SOURCE_PARTITION, str(record.partition()).encode()),
        (SOURCE_OFFSET, str(record.offset()).encode()),
        (SOURCE_CONSUMER_GROUP, group_id.encode()),
        (SOURCE_ATTEMPTS, str(attempts).encode()),
    ]
    if error is not None:
        trace = "".join(traceback.format_exception(error)).encode()
        message = str(error) if reason is None else f"{error} ({reason})"
        headers += [
            (ERROR_TYPE, type(error).__qualname__.encode()),
            (ERROR_MESSAGE, message.encode()[:MAX_ERROR_MESSAGE_BYTES]),
            # Keep the end of the trace: the frame that raised is the useful part.
            (ERROR_TRACEBACK, trace[-MAX_TRACEBACK_BYTES:]),
        ]
    elif reason is not None:
        headers += [(ERROR_TYPE, b"Undeliverable"), (ERROR_MESSAGE, reason.encode())]
    return headers


def _size(value: str | bytes | None) -> int:
    return len(value) if value is not None else 0


def without_large_parts(record: KafkaRecord, headers: Headers, why: str) -> tuple[bytes | None, Headers]:
    """The key and headers of a dead letter too large to be written whole.

    The value and every original header or key over ``MAX_KEPT_HEADER_BYTES``
    are left out (the original stays in the source topic until its retention
    deletes it), and a ``dead_letter_omitted`` header says what was dropped.
    """
    # The headers this module added (origin, error) come after the record's own.
    own = len(record.headers() or [])
    kept = [(name, value) for name, value in headers[:own] if _size(value) <= MAX_KEPT_HEADER_BYTES]
    kept += headers[own:]
    dropped = [name for name, value in headers[:own] if _size(value) > MAX_KEPT_HEADER_BYTES]
    key = record.key()
    key = key if _size(key) <= MAX_KEPT_HEADER_BYTES else None
    summary = f"value of {_size(record.value())} bytes"
    if dropped:
        summary += (
            f", {len(dropped)} header(s) over {MAX_KEPT_HEADER_BYTES} bytes ({', '.join(dropped[:10])})"
        )
    if key is None and record.key() is not None:
        summary += f", key of {_size(record.key())} bytes"
    summary += (
        f": the whole record was refused ({why}); the original stays at "
        f"{record.topic()}/{record.partition()}@{record.offset()} until the topic's retention deletes it"
    )
    return key, [*kept, (DEAD_LETTER_OMITTED, summary.encode())]


def _size_error(error: object) -> bool:
    """Whether a failed write failed for the record's size."""
    if isinstance(error, DeliveryError) and isinstance(error.__cause__, KafkaException):
        error = error.__cause__.args[0]
    return isinstance(error, KafkaError) and error.code() in SIZE_ERRORS


class DeadLetterWriter:
    """Writes dead letters, one attempt at a time.

    The caller learns of each outcome and decides when to write again (the
    consumer does so after a capped backoff, from its own thread, and not at
    all once the partition is revoked): the source offset must not be
    committed before Kafka has the dead letter.  A record too large for the
    producer (``message.max.bytes``) or the dead-letter topic
    (``max.message.bytes``), which no retry can write, is written at once
    without its value and large headers (see :func:`without_large_parts`), so
    that its partition goes on.

    Parameters:
      producer(KafkaProducer): Where records are sent.
      group_id(str): The workers' consumer group, for the headers.
    """

    def __init__(self, producer: KafkaProducer, group_id: str) -> None:
        self.logger = get_logger(__name__, type(self))
        self.producer = producer
        self.group_id = group_id

    def headers(
        self,
        record: KafkaRecord,
        *,
        attempts: int,
        error: BaseException | None,
        reason: str | None,
        group_id: str | None = None,
    ) -> Headers:
        """The dead letter's headers (see :func:`dead_letter_headers`); ``group_id``: the
        group that gave up on it, when not the workers' consumer group (a share group)."""
        return dead_letter_headers(
            record, group_id=group_id or self.group_id, attempts=attempts, error=error, reason=reason
        )

    def write(
        self,
        topic: str,
        record: KafkaRecord,
        headers: Headers,
        *,
        message_id: str,
        on_done: Callable[[object | None], object],
    ) -> None:
        """Send ``record`` with ``headers`` to the dead-letter ``topic``; call
        ``on_done(None)`` once Kafka acknowledged it, or ``on_done(error)``."""
        self._send(topic, record, record.key(), headers, message_id, on_done, whole=True)

    def _send(
        self,
        topic: str,
        record: KafkaRecord,
        key: bytes | None,
        headers: Headers,
        message_id: str,
        on_done: Callable[[object | None], object],
        whole: bool,
    ) -> None:
        def failed(error: object) -> None:
            if whole and _size_error(error):
                self.logger.error(
                    "Message %s is too large for %r (%s); dead-lettering it without its value.",
                    message_id,
                    topic,
                    error,
                )
                smaller_key, smaller_headers = without_large_parts(record, headers, str(error))
                self._send(topic, record, smaller_key, smaller_headers, message_id, on_done, whole=False)
            else:
                on_done(error)

        def on_delivery(error: KafkaError | None) -> None:
            if error is None:
                on_done(None)
            else:
                failed(error)

        try:
            self.producer.send(
                topic,
                record.value() if whole else b"",
                message_id=message_id,
                key=key,
                headers=headers,
                on_delivery=on_delivery,
                retried_by_caller=True,
            )
        except DeliveryError as e:
            failed(e)
