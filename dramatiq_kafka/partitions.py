"""What a consumer knows of each assigned partition, and the messages it hands out."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, NamedTuple

from confluent_kafka import Message as KafkaRecord
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from .offsets import PartitionOffsets


class KafkaMessageProxy(MessageProxy):
    """A message together with the record it was read from.

    Attributes:
      record: The Kafka record (topic, partition, offset, key, headers).
      failures(int): How many runs of this job failed so far; also in
        ``message.options["retries"]`` while it is retried.
      cancelled(bool): Whether its partition was revoked before it started
        (it is skipped) or while it ran and it learned so from
        ``revoked()``: its offset is not committed, the new owner runs it.
    """

    def __init__(self, message: Message[Any], record: KafkaRecord, state: PartitionState) -> None:
        super().__init__(message)
        self.record = record
        self.failures = 0
        self.cancelled = False
        self._state = state

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


class HeldRecord(NamedTuple):
    """A delayed record waiting in memory until ``eta`` (epoch ms)."""

    eta: int
    offset: int
    record: KafkaRecord
    message: Message[Any]


class PartitionState:
    """One assigned partition: its fetched records, its running jobs' keys,
    its offsets, and the retry it waits for.

    All of it is guarded by the consumer's lock.

    Attributes:
      buffer: Records fetched and not yet handed out, in offset order.
      offsets: Offsets handed out, finished, committable.
      keys: Keys of the jobs running now, with their counts.
      retry: The failed job waiting for its backoff, and ``retry_at``
        (monotonic seconds) when it runs again.
      dead_letters_pending: Dead letters written but not yet acknowledged.
      abandoned: Jobs left unfinished on purpose, to run again after a
        restart: stopped by ``SystemExit``/``KeyboardInterrupt``, or whose
        own sends Kafka did not acknowledge.
      streak: Failures since a job last succeeded at its first run while
        nothing failed: the partition's retry budget spent.
      failing_offset: The offset of the job being retried, if any.
      held: Delayed records waiting until they are due, a heap by
        ``eta`` (delay topics only).
      releasing: Due delayed records sent to their queue and not yet
        acknowledged by Kafka (delay topics only).
      moved: Offsets past the committed one that an earlier owner already
        moved to the queue, read from the commit metadata (delay topics
        only; ``None`` until read).
      last_commit: The position and metadata last committed (delay topics).
      paused: Whether fetching is paused for this partition.
      revoked: Whether the partition was taken away (or the consumer
        closed): its jobs' acks no longer count.
      owned: Whether it is still ours; a revoked partition stays ours for
        the revocation's grace period, then its acks are ignored.
    """

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.buffer: deque[KafkaRecord] = deque()
        self.offsets = PartitionOffsets()
        self.keys: Counter[bytes] = Counter()
        self.retry: KafkaMessageProxy | None = None
        self.retry_at = 0.0
        self.dead_letters_pending = 0
        self.abandoned = 0
        self.streak = 0
        self.failing_offset: int | None = None
        self.held: list[HeldRecord] = []
        self.releasing = 0
        self.moved: set[int] | None = None
        self.last_commit: tuple[int, str] | None = None
        self.paused = False
        self.revoked = False
        self.owned = True

    @property
    def blocked(self) -> bool:
        """Whether no job of this partition may start (a retry or a dead
        letter is pending)."""
        return self.retry is not None or self.dead_letters_pending > 0

    @property
    def running(self) -> int:
        """Jobs handed out and still running (what counts against prefetch),
        or, on a delay topic, releases not yet acknowledged."""
        idle = (self.retry is not None) + self.dead_letters_pending + self.abandoned + len(self.held)
        return self.offsets.unfinished - idle
