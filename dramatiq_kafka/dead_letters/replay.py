"""Sending dead letters back to their queue: plan, send, commit.

A replay sends the original record (key, value, headers, without the
dead-letter headers) back to its source topic; its progress is committed
in the DLQ group (see ``reader.py``), so that running the same replay
twice sends nothing the second time.  It goes in three steps:

* **plan**: from the DLQ group's commits, which offsets of each partition
  are left to examine and how many were replayed before;
* **send**: read them, decide for each (replay, leave out, defer, refuse)
  and hand the replayed ones to a producer;
* **commit**: once Kafka acknowledged the sends, commit per partition the
  first offset left and the offsets replayed past it.

Reading the topic is ``reader.py``; decoding a dead letter ``records.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.logging import get_logger

from ..client_log import with_log
from ..offsets import MAX_METADATA, encode_done_past_within
from ..producer import PRODUCER_DEFAULTS
from .headers import DEAD_LETTER_OMITTED
from .reader import METADATA_PREFIX, DeadLetterReader
from .records import DeadLetterRecord, Filters

__all__ = ["MAX_METADATA", "Progress", "ReplayResult", "replay"]

#: Called with (examined so far, to examine in all, replayed so far).
Progress = Callable[[int, int, int], None]


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
      examined: Dead letters read (past those replayed earlier).
      replayed: Sent back and acknowledged (or, in a dry run, to be sent).
      skipped: Left out by the filters (still to replay).
      already: Replayed by an earlier run.
      deferred: Matching, but left for a later run (see ``MAX_METADATA``).
      failed: Matching, but not acknowledged by Kafka, or with nowhere to go.
      resolved: Marked as handled without being sent (``resolve=True``).
      records: In a dry run, the dead letters that would be sent (or resolved:
        their destination ``""``).
    """

    examined: int = 0
    replayed: int = 0
    skipped: int = 0
    already: int = 0
    deferred: int = 0
    failed: int = 0
    resolved: int = 0
    errors: list[str] = field(default_factory=list)
    records: list[tuple[DeadLetterRecord, str]] = field(default_factory=list)
    #: Whether an interrupt (Ctrl-C) cut the replay short.
    interrupted: bool = False
    #: Sent but not acknowledged when the replay was cut short: not
    #: committed, so the next run sends them again.
    unconfirmed: int = 0
    #: Actor names of the dead letters examined.
    actors_seen: set[str] = field(default_factory=set)


def replay(
    reader: DeadLetterReader,
    config: dict[str, Any],
    filters: Filters,
    *,
    to_topic: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    timeout: float = 30.0,
    send_omitted: bool = False,
    resolve: bool = False,
) -> ReplayResult:
    """Send the matching dead letters not replayed yet back to their source
    topic (or ``to_topic``), then commit them in the DLQ group.

    The original key, value and headers are sent; the dead-letter headers
    are not.  Commits happen only after Kafka acknowledged the sends: a
    replay cut short sends again what it could not confirm.

    Parameters:
      reader(DeadLetterReader): The dead-letter topic and DLQ group.
      config(dict): librdkafka settings for the producer.
      filters(Filters): Which dead letters to replay.
      to_topic(str): Where to send them instead of their source topic.
      dry_run(bool): Send and commit nothing; list what would be sent.
      progress(callable): Called as records are examined.
      timeout(float): Seconds to wait for Kafka's acknowledgements.
      send_omitted(bool): Send dead letters whose value was left out
        (``dead_letter_omitted``) without it; by default they are refused,
        since the job would arrive empty.
      resolve(bool): Send nothing, but commit the matching dead letters in
        the DLQ group as handled: a later replay leaves them out.

    An interrupt (``KeyboardInterrupt``) stops the reading, waits for the
    acknowledgements of what was sent (up to ``timeout``), commits those,
    and returns with ``interrupted`` set: the next run sends only what
    was not acknowledged or not reached.
    """
    sender = None if dry_run or resolve else _Sender(config)
    run = _Replay(reader, filters, sender, to_topic, send_omitted, resolve=resolve, dry_run=dry_run)
    run.plan()
    try:
        run.send(progress)
    except KeyboardInterrupt:
        run.interrupted()
    if run.sender is not None:
        run.confirm(timeout)
    if run.sender is not None or (resolve and not dry_run):
        run.commit()
    return run.result


@dataclass
class _PartitionReplay:
    """A partition's replay: what was examined and what was left."""

    start: int
    stop: int
    #: Offsets in [start, stop) not replayed (left out by a filter,
    #: deferred, or not acknowledged), in order.
    left: list[int] = field(default_factory=list)
    #: Characters of the commit metadata so far (replayed ranges after ``left[0]``).
    metadata_chars: int = 0
    last_left: bool = False
    #: Offsets past the committed one that an earlier run replayed.
    replayed_before: set[int] = field(default_factory=set)

    def commit_point(self) -> tuple[int, list[int]]:
        """The offset to commit and the offsets replayed past it."""
        left = sorted(set(self.left))
        if not left:
            return self.stop, []
        watermark = left[0]
        missing = set(left)
        return watermark, [o for o in range(watermark + 1, self.stop) if o not in missing]

    def handled(self, offset: int) -> None:
        if self.last_left:
            self.metadata_chars += 2 * len(str(offset)) + 2
        self.last_left = False

    def leave(self, offset: int) -> None:
        self.left.append(offset)
        self.last_left = True

    def room_for(self, offset: int) -> bool:
        """Whether the commit metadata can still list ``offset`` as replayed."""
        if not self.left:
            return True
        # Streaming appends offsets in order: the first one left is the lowest.
        bitmap_chars = 4 * ((offset - self.left[0]) // 8 // 3 + 1) + 2
        return min(self.metadata_chars, bitmap_chars) <= MAX_METADATA


class _Sender:
    """A producer for the replay, and the sends Kafka has not acknowledged yet."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer(with_log({**PRODUCER_DEFAULTS, **config}, "replay producer"))
        self._lock = threading.Lock()
        #: (partition, offset) in the dead-letter topic -> why it is not acknowledged.
        self._unacknowledged: dict[tuple[int, int], str] = {}

    def send(self, topic: str, record: DeadLetterRecord) -> str | None:
        """Hand ``record`` to librdkafka for ``topic``; why it refused it, if it did."""
        where = (record.partition, record.offset)

        def on_delivery(error: KafkaError | None, _record: KafkaRecord) -> None:
            with self._lock:
                if error is None:
                    self._unacknowledged.pop(where, None)
                else:
                    self._unacknowledged[where] = str(error)

        with self._lock:
            self._unacknowledged[where] = "not acknowledged"
        refused = self._produce(topic, record, on_delivery)
        if refused is not None:
            with self._lock:
                self._unacknowledged.pop(where, None)
        return refused

    def _produce(
        self,
        topic: str,
        record: DeadLetterRecord,
        on_delivery: Callable[[KafkaError | None, KafkaRecord], None],
    ) -> str | None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.producer.produce(
                    topic, record.value, record.key, headers=record.original_headers, on_delivery=on_delivery
                )
                self.producer.poll(0)
                return None
            except BufferError:
                # Many records at once: wait for the local queue to drain.
                if time.monotonic() > deadline:
                    return "the producer's queue stayed full for 60s"
                self.producer.poll(0.5)
            except KafkaException as e:
                return str(e.args[0])

    def flush(self, timeout: float) -> dict[tuple[int, int], str]:
        """Wait up to ``timeout`` for the acknowledgements; the sends that
        got none, with why."""
        remaining = self.producer.flush(timeout)
        with self._lock:
            failures = dict(self._unacknowledged)
        if remaining:
            return {where: f"{reason} within {timeout:g}s" for where, reason in failures.items()}
        return failures


class _Replay:
    """One run of :func:`replay`: its state from plan to commit."""

    def __init__(
        self,
        reader: DeadLetterReader,
        filters: Filters,
        sender: _Sender | None,
        to_topic: str | None,
        send_omitted: bool,
        *,
        resolve: bool = False,
        dry_run: bool = False,
    ) -> None:
        self.reader = reader
        self.resolve = resolve
        self.dry_run = dry_run
        self.filters = filters
        self.sender = sender
        self.to_topic = to_topic
        self.send_omitted = send_omitted
        self.result = ReplayResult()
        self.partitions: dict[int, _PartitionReplay] = {}
        #: The next offset per partition once a record is wholly handled: where an interrupt stops.
        self.reached: dict[int, int] = {}

    # -- plan ----------------------------------------------------------------------------------------

    def plan(self) -> None:
        """Per partition the filters allow, the offsets to examine: from
        the DLQ group's commit to the end of the topic as it is now."""
        bounds = self.reader.bounds()
        replayed = self.reader.replayed(list(bounds))
        filters = self.filters
        for partition, (low, high) in bounds.items():
            if filters.partition is not None and partition != filters.partition:
                continue
            if filters.picks and all(p != partition for p, _ in filters.picks):
                continue
            committed, beyond = replayed[partition]
            first = max(low, committed)
            # Below the committed offset everything was replayed by an earlier run
            # (the first record left out stops the commit).
            if filters.picks:
                self.result.already += sum(1 for p, o in filters.picks if p == partition and low <= o < first)
            else:
                below_from = max(low, filters.start_offset if filters.start_offset is not None else low)
                below_to = min(first, filters.end_offset + 1 if filters.end_offset is not None else first)
                self.result.already += max(0, below_to - below_from)
            self.partitions[partition] = _PartitionReplay(first, high, replayed_before=beyond)

    # -- send ----------------------------------------------------------------------------------------

    def send(self, progress: Progress | None) -> None:
        """Examine the planned records in order, sending the ones to replay.
        ``result.replayed`` and ``reached`` are kept current, for an
        interrupt to know where it stopped."""
        result = self.result
        start = {p: state.start for p, state in self.partitions.items()}
        end = {p: state.stop for p, state in self.partitions.items()}
        total = sum(max(0, end[p] - start[p]) for p in start)
        for record in self.reader.read(start, end):
            result.examined += 1
            if record.actor_name:
                result.actors_seen.add(record.actor_name)
            self._examine(record, self.partitions[record.partition])
            # Last: an interrupt before this line leaves the record uncommitted (sent again, not lost).
            self.reached[record.partition] = record.offset + 1
            if progress is not None:
                progress(result.examined, total, result.replayed)

    def _examine(self, record: DeadLetterRecord, state: _PartitionReplay) -> None:
        result = self.result
        where = f"{record.partition}/{record.offset}"
        omitted = record.header(DEAD_LETTER_OMITTED)
        if record.offset in state.replayed_before:
            # Handled by an earlier run: counted only where the filters look.
            result.already += self.filters.matches(record)
            state.handled(record.offset)
        elif not self.filters.matches(record):
            result.skipped += 1
            state.leave(record.offset)
        elif self.resolve:
            if state.room_for(record.offset):
                state.handled(record.offset)
                result.resolved += 1
                if self.dry_run:
                    result.records.append((record, ""))
            else:
                result.deferred += 1
                state.leave(record.offset)
        elif (destination := self.to_topic or record.source_topic) is None:
            self._refuse(state, record, f"{where}: no source_topic header; use --to")
        elif omitted is not None and not self.send_omitted:
            # The job would arrive empty: say where the original is instead.
            self._refuse(
                state,
                record,
                f"{where}: not replayed, the dead letter lacks its {omitted}; "
                "--send-omitted sends it as it is",
            )
        elif not state.room_for(record.offset):
            result.deferred += 1
            state.leave(record.offset)
        elif self.sender is None:
            state.handled(record.offset)
            result.records.append((record, destination))
            result.replayed += 1
        elif (refused := self.sender.send(destination, record)) is not None:
            state.handled(record.offset)
            self._refuse(state, record, f"{where}: {refused}")
        else:
            state.handled(record.offset)
            result.replayed += 1

    def _refuse(self, state: _PartitionReplay, record: DeadLetterRecord, error: str) -> None:
        self.result.failed += 1
        self.result.errors.append(error)
        state.leave(record.offset)

    def interrupted(self) -> None:
        """Cut short: nothing past what was reached is committed."""
        self.result.interrupted = True
        for partition, state in self.partitions.items():
            state.stop = self.reached.get(partition, state.start)

    # -- commit --------------------------------------------------------------------------------------

    def confirm(self, timeout: float) -> None:
        """Wait for Kafka's acknowledgements; what got none is left for the next run."""
        assert self.sender is not None
        result = self.result
        failures = self.sender.flush(timeout)
        for (partition, offset), reason in sorted(failures.items()):
            self.partitions[partition].left.append(offset)
            if not result.interrupted:
                result.errors.append(f"{partition}/{offset}: {reason}")
        if result.interrupted:
            result.unconfirmed = len(failures)
        else:
            result.failed += len(failures)
        result.replayed -= len(failures)

    def commit(self) -> None:
        """Commit, per partition examined, the first offset left and the
        offsets replayed past it (as many as the metadata holds)."""
        offsets = []
        for partition, state in self.partitions.items():
            if state.stop <= state.start:
                continue
            watermark, beyond = state.commit_point()
            metadata, listed = encode_done_past_within(watermark, beyond)
            if listed < len(beyond):
                # Too many islands to list: the replayed ones past the cut
                # may be sent again by a later replay.
                get_logger(__name__).warning(
                    "Partition %d: %d replayed record(s) past offset %d cannot all be remembered.",
                    partition,
                    len(beyond),
                    watermark,
                )
            offsets.append(
                TopicPartition(self.reader.topic, partition, watermark, metadata=METADATA_PREFIX + metadata)
            )
        if offsets:
            self.reader.commit(offsets)
