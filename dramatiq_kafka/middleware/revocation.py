"""Telling jobs that their partition was taken away, and not starting such jobs."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage

from ..partitions import KafkaMessageProxy, ShareMessageProxy

_current = threading.local()
# Set from the moment a worker starts shutting down: its running jobs finish
# before its consumers close, and resumable jobs stop at their next checkpoint.
_stopping = threading.Event()


def current_message() -> KafkaMessageProxy | None:
    """The message of the job running in this thread, if any."""
    return getattr(_current, "message", None)


def worker_stopping() -> bool:
    """Whether the worker of this process is shutting down."""
    return _stopping.is_set()


def revoked() -> bool:
    """Whether the partition of the job running in this thread was revoked
    (given to another worker by a rebalance, or this worker is closing).

    A long job can check it between steps and stop early.  Once it has
    answered ``True``, the job's offset is never committed by this worker,
    however the job ends: the partition's new owner runs it again from the
    start.  A job that never asks and finishes within the revocation's
    grace period (5 s) is committed as usual.  Outside a job it is ``False``.
    """
    message = current_message()
    if message is None or not message.partition_revoked:
        return False
    # The job now knows and may stop half-way: whatever it returns, its
    # offset is not committed, so the new owner runs it in full.
    message.cancelled = True
    return True


class Revocation(Middleware):
    """Skips jobs whose partition was revoked before they started, and
    keeps track of the running job for :func:`revoked` and of the worker
    shutting down.

    Dramatiq's work queue may still hold records of a partition that a
    rebalance gave away; running them would duplicate what the new owner
    runs, so they are skipped (their acks were going to be ignored).  So are
    records of a share queue that waited there until too little of their
    lock was left: Kafka would lend them again while they run.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        _stopping.clear()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        _stopping.set()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if not isinstance(message, KafkaMessageProxy):
            return
        if isinstance(message, ShareMessageProxy) and message.too_late_to_start:
            message.cancelled = True
            raise SkipMessage(
                f"{message.message_id} waited in the worker until too little of its record lock was "
                "left; its record goes back to Kafka"
            )
        if message.partition_revoked:
            message.cancelled = True
            raise SkipMessage(
                f"partition {message.partition} was revoked before {message.message_id} started"
            )
        _current.message = message

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        _current.message = None

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _current.message = None
