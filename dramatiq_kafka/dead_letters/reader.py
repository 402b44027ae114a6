"""Reading a dead-letter topic, and what its DLQ group says was replayed.

A replay's progress is committed in a consumer group of its own (the
*DLQ group*): its committed offset of a partition is the first dead
letter not yet replayed, and the dead letters replayed after it (a filter
left an earlier one out) are listed in the commit's metadata.
:class:`DeadLetterReader` reads both; :func:`show` (oldest first) and
:func:`newest` list dead letters with whether they were replayed.  Sending them back is ``replay.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from dramatiq.logging import get_logger

from ..client_log import with_log
from ..errors import KafkaBrokerError, KafkaConnectionError, not_reachable
from ..offsets import decode_done_past
from .records import DeadLetterRecord, Filters

#: Marks the commit metadata written by a replay.
METADATA_PREFIX = "dramatiq-kafka-replayed:"


def dlq_group_for(group_id: str) -> str:
    """The default DLQ group of a workers' group."""
    return f"{group_id}.dlq"


class DeadLetterReader:
    """Reads a dead-letter topic from given offsets up to its end as it was
    when reading began.

    Parameters:
      config(dict): librdkafka settings (``bootstrap.servers`` included).
      topic(str): The dead-letter topic.
      group_id(str): The DLQ group: its commits say what was replayed.
      timeout(float): Seconds each request to Kafka may take.
    """

    def __init__(self, config: dict[str, Any], topic: str, group_id: str, *, timeout: float = 10.0) -> None:
        self.topic = topic
        self.group_id = group_id
        self.timeout = timeout
        self.bootstrap_servers = str(config.get("bootstrap.servers"))
        self.consumer = Consumer(
            with_log(config, "dead-letter reader")
            | {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )

    def _unreachable(self, error: object) -> KafkaConnectionError:
        return not_reachable(self.bootstrap_servers, error)

    def bounds(self) -> dict[int, tuple[int, int]]:
        """The low and high watermark of each partition.

        Raises:
          KafkaBrokerError: When the topic does not exist.
        """
        try:
            metadata = self.consumer.list_topics(self.topic, timeout=self.timeout)
        except KafkaException as e:
            raise self._unreachable(e.args[0]) from None
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            raise KafkaBrokerError(f"The dead-letter topic {self.topic!r} does not exist.")
        bounds = {}
        for partition in sorted(found.partitions):
            try:
                bounds[partition] = self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.timeout, cached=False
                )
            except KafkaException as e:
                raise self._unreachable(e.args[0]) from None
        return bounds

    def replayed(self, partitions: Sequence[int]) -> dict[int, tuple[int, set[int]]]:
        """Per partition, the DLQ group's committed offset (``-1``: none) and
        the offsets replayed past it."""
        try:
            committed = self.consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=self.timeout
            )
        except KafkaException as e:
            raise self._unreachable(e.args[0]) from None
        replayed = {}
        for tp in committed:
            beyond: set[int] = set()
            metadata = tp.metadata or ""
            if metadata.startswith(METADATA_PREFIX):
                try:
                    beyond = decode_done_past(tp.offset, metadata[len(METADATA_PREFIX) :])
                except ValueError:
                    get_logger(__name__).warning(
                        "Ignoring the unreadable commit metadata of %s/%d.", self.topic, tp.partition
                    )
            replayed[tp.partition] = (tp.offset if tp.offset >= 0 else -1, beyond)
        return replayed

    def read(self, start: dict[int, int], end: dict[int, int]) -> Iterator[DeadLetterRecord]:
        """The records from ``start`` (inclusive) to ``end`` (exclusive) of
        each partition, in offset order within a partition."""
        todo = {p: offset for p, offset in start.items() if offset < end[p]}
        if not todo:
            return
        self.consumer.assign([TopicPartition(self.topic, p, offset) for p, offset in todo.items()])
        idle_since = time.monotonic()
        while todo:
            records = self.consumer.consume(500, 0.5)
            if not records and time.monotonic() - idle_since > self.timeout:
                raise KafkaBrokerError(
                    f"Reading {self.topic!r} stalled at offsets {todo} (ends {end}): nothing came "
                    f"within {self.timeout:g}s."
                )
            for record in records:
                error = record.error()
                if error is not None:
                    if error.fatal():
                        raise self._unreachable(error.str())
                    continue
                idle_since = time.monotonic()
                partition = int(record.partition() or 0)
                offset = int(record.offset() or 0)
                if partition not in todo or offset >= end[partition]:
                    continue
                yield DeadLetterRecord.from_record(record)
                if offset + 1 >= end[partition]:
                    del todo[partition]
                else:
                    todo[partition] = offset + 1

    def commit(self, offsets: list[TopicPartition]) -> None:
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            raise KafkaBrokerError(f"Could not commit the replay in group {self.group_id!r}: {e}") from None

    def close(self) -> None:
        self.consumer.close()


def _ranges(
    reader: DeadLetterReader, filters: Filters, pending_only: bool
) -> tuple[dict[int, int], dict[int, int], dict[int, tuple[int, set[int]]]]:
    """Where to start and stop reading each partition the filters allow, and what the
    DLQ group replayed."""
    bounds = reader.bounds()
    replayed = reader.replayed(list(bounds))
    start, end = {}, {}
    for partition, (low, high) in bounds.items():
        if filters.partition is not None and partition != filters.partition:
            continue
        start[partition] = max(low, filters.start_offset or 0)
        if pending_only:
            start[partition] = max(start[partition], replayed[partition][0])
        end[partition] = high if filters.end_offset is None else min(high, filters.end_offset + 1)
    return start, end, replayed


def _matching(
    records: Iterator[DeadLetterRecord],
    filters: Filters,
    replayed: dict[int, tuple[int, set[int]]],
    pending_only: bool,
) -> Iterator[tuple[DeadLetterRecord, bool]]:
    for record in records:
        committed, beyond = replayed[record.partition]
        done = record.offset < committed or record.offset in beyond
        if filters.matches(record) and not (pending_only and done):
            yield record, done


def show(
    reader: DeadLetterReader, filters: Filters, *, limit: int | None = None, pending_only: bool = False
) -> Iterator[tuple[DeadLetterRecord, bool]]:
    """The dead letters matching ``filters``, oldest first (in offset order within a
    partition), each with whether the DLQ group already replayed it."""
    start, end, replayed = _ranges(reader, filters, pending_only)
    shown = 0
    for found in _matching(reader.read(start, end), filters, replayed, pending_only):
        yield found
        shown += 1
        if limit is not None and shown >= limit:
            return


def newest(
    reader: DeadLetterReader, filters: Filters, *, limit: int, pending_only: bool = False
) -> list[tuple[DeadLetterRecord, bool]]:
    """The latest ``limit`` dead letters matching ``filters``, newest first (by the time
    they were written; the later offset first among equal times).

    Each partition is read backwards from its end in windows that double, so a topic of
    many dead letters is read only as far back as the matches need.
    """
    start, end, replayed = _ranges(reader, filters, pending_only)
    found: list[tuple[DeadLetterRecord, bool]] = []
    for partition, low in start.items():
        matches: list[tuple[DeadLetterRecord, bool]] = []
        upto, window = end[partition], limit
        while upto > low and len(matches) < limit:
            since = max(low, upto - window)
            records = reader.read({partition: since}, {partition: upto})
            matches = [*_matching(records, filters, replayed, pending_only), *matches]
            upto, window = since, window * 2
        found.extend(matches[-limit:])
    found.sort(key=lambda item: (item[0].timestamp, item[0].offset), reverse=True)
    return found[:limit]
