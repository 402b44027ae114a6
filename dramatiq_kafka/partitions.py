"""The messages a consumer hands to Dramatiq's worker, and what they know of their record:
:class:`KafkaMessageProxy` (the consumer group), :class:`ShareMessageProxy` (a share group)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from .outcomes import Outcome
from .partition_state import Job
from .share_records import Delivery


class KafkaMessageProxy(MessageProxy):
    """A message together with the record it was read from.

    Attributes:
      record: The Kafka record (topic, partition, offset, key, headers).
      outcome: What becomes of its failed run, once decided.
      cancelled(bool): Whether its partition was revoked before it started
        (it is skipped) or while it ran and it learned so from
        ``revoked()``: its offset is not committed, the new owner runs it.
    """

    def __init__(self, message: Message[Any], record: KafkaRecord, job: Job, consumer: Any = None) -> None:
        super().__init__(message)
        # The message's fields on the proxy itself: Dramatiq's middleware read them
        # about 25 times per job, each a miss that went through ``__getattr__``.
        self.__dict__.update(vars(message))
        self.record = record
        self.cancelled = False
        self.outcome: Outcome | None = None
        self._job = job
        self._consumer = consumer

    def again(self) -> KafkaMessageProxy:
        """A new proxy of the same message, record and job, for its next run: the
        worker thread of the last run may still hold this one (Dramatiq clears a
        message's exception after acking it)."""
        return KafkaMessageProxy(self._message, self.record, self._job, self._consumer)

    def decide_failure(self, error: BaseException) -> Outcome | None:
        """What becomes of this run, which raised ``error`` (see ``KafkaConsumer.decide``)."""
        return None if self._consumer is None else self._consumer.decide(self, error)

    @property
    def partition(self) -> int:
        return int(self.record.partition() or 0)

    @property
    def offset(self) -> int:
        return int(self.record.offset() or 0)

    @property
    def key(self) -> bytes | None:
        key = self.record.key()
        return key if isinstance(key, bytes) else None

    @property
    def failures(self) -> int:
        """How many runs of this job failed so far; also in
        ``message.options["retries"]`` while it is retried."""
        return self._job.failures

    @property
    def partition_revoked(self) -> bool:
        """Whether the job's partition was taken away (or its consumer closed)."""
        return self._job.schedule.revoked

    @property
    def partition_owned(self) -> bool:
        """Whether the partition is still this worker's: false once a
        revocation's grace is over (its new owner runs the record)."""
        return self._job.schedule.owned


class ShareMessageProxy(KafkaMessageProxy):
    """A message of a share queue together with the record it was read from.

    Attributes:
      delivery(Delivery): This delivery of the record (Kafka's delivery count is
        ``delivery.count``).
    """

    def __init__(self, message: Message[Any], record: KafkaRecord, delivery: Delivery, consumer: Any) -> None:
        MessageProxy.__init__(self, message)
        self.__dict__.update(vars(message))
        self.record = record
        self.cancelled = False
        self.outcome: Outcome | None = None
        self.delivery = delivery
        self._consumer = consumer

    def again(self) -> KafkaMessageProxy:
        return ShareMessageProxy(self._message, self.record, self.delivery, self._consumer)

    @property
    def failures(self) -> int:
        return self.delivery.failures

    @property
    def delivery_count(self) -> int:
        """How many times Kafka delivered this record, this time included."""
        return self.delivery.count

    @property
    def too_late_to_start(self) -> bool:
        """Whether it waited in the worker until too little of its record lock was left
        to start (then it is skipped, and the record goes back to Kafka)."""
        return bool(self._consumer.records.too_late(self.delivery, time.monotonic()))

    @property
    def partition_revoked(self) -> bool:
        # A share group takes no partition away: a record is lent, not a partition.
        return False

    @property
    def partition_owned(self) -> bool:
        return True
