"""Reading dead letters and sending them back to their queue.

A dead letter is the original record (key, value, headers) plus the
headers of ``docs/wire-format.md`` saying where it came from and why it
failed.  A replay sends the original record back; its progress is
committed in a consumer group of its own (the *DLQ group*), so that
running the same replay twice sends nothing the second time.

The DLQ group's committed offset of a partition is the first dead letter
not yet replayed; dead letters replayed after it (a filter left an
earlier one out) are listed in the commit's metadata, so a later replay
with other filters picks up exactly the ones left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.logging import get_logger

from .client_log import with_log
from .errors import KafkaBrokerError, KafkaConnectionError
from .offsets import decode_done_past, encode_done_past, encode_offsets
from .producer import PRODUCER_DEFAULTS
from .wire import ACTOR_HEADER, MESSAGE_ID_HEADER, Headers

#: Headers the dead-letter writer adds; a replay leaves them out.
DEAD_LETTER_HEADERS = frozenset(
    {
        "source_topic",
        "source_partition",
        "source_offset",
        "source_consumer_group",
        "source_attempts",
        "error_type",
        "error_message",
        "error_traceback",
        "dead_letter_omitted",
    }
)

#: Marks the commit metadata written by a replay.
METADATA_PREFIX = "dramatiq-kafka-replayed:"
#: The longest commit metadata written (Kafka's ``offset.metadata.max.bytes`` is 4096).
MAX_METADATA = 3500


def dlq_group_for(group_id: str) -> str:
    """The default DLQ group of a workers' group."""
    return f"{group_id}.dlq"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of a dead-letter topic.

    Attributes:
      topic, partition, offset: Where it is in the dead-letter topic.
      key, value: The original record's.
      headers: Every header, the dead-letter ones included, in order.
      timestamp: Milliseconds since the epoch when it was dead-lettered.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, str | bytes | None], ...]
    timestamp: int

    @classmethod
    def from_record(cls, record: KafkaRecord) -> DeadLetterRecord:
        raw = record.headers() or []
        headers = tuple(raw.items() if isinstance(raw, dict) else raw)
        return cls(
            topic=str(record.topic()),
            partition=int(record.partition() or 0),
            offset=int(record.offset() or 0),
            key=record.key(),
            value=record.value(),
            headers=headers,
            timestamp=int(record.timestamp()[1]),
        )

    def header(self, name: str) -> str | None:
        """The last value of a header, as text."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode(errors="replace") if isinstance(value, bytes) else value
        return None

    @property
    def original_headers(self) -> Headers:
        """The headers of the record as it was enqueued."""
        return [(key, value) for key, value in self.headers if key not in DEAD_LETTER_HEADERS]

    @property
    def message(self) -> dict[str, Any] | None:
        """The Dramatiq message of the value, or ``None`` when it is none."""
        if self.value is None:
            return None
        try:
            data = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    @property
    def actor_name(self) -> str | None:
        message = self.message or {}
        actor = self.header(ACTOR_HEADER) or message.get("actor_name")
        return actor if isinstance(actor, str) else None

    @property
    def error_type(self) -> str | None:
        return self.header("error_type")

    @property
    def source_topic(self) -> str | None:
        return self.header("source_topic")

    def asdict(self, *, traceback: bool = False) -> dict[str, Any]:
        """What ``dlq show`` prints: the job, its origin and its error."""
        message = self.message
        source_partition = self.header("source_partition")
        source_offset = self.header("source_offset")
        attempts = self.header("source_attempts")
        shown: dict[str, Any] = {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "actor": self.actor_name,
            "message_id": self.header(MESSAGE_ID_HEADER) or (message or {}).get("message_id"),
            "args": message.get("args") if message else None,
            "kwargs": message.get("kwargs") if message else None,
            "options": message.get("options") if message else None,
            "key": None if self.key is None else self.key.decode(errors="replace"),
            "source_topic": self.source_topic,
            "source_partition": int(source_partition) if source_partition else None,
            "source_offset": int(source_offset) if source_offset else None,
            "source_consumer_group": self.header("source_consumer_group"),
            "source_attempts": int(attempts) if attempts else None,
            "error_type": self.error_type,
            "error_message": self.header("error_message"),
        }
        if message is None:
            shown["value"] = None if self.value is None else self.value.decode(errors="replace")
        if traceback:
            shown["error_traceback"] = self.header("error_traceback")
        return shown


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command looks at.  Empty lists match all.

    Attributes:
      actors: Actor names.
      error_types: Values of the ``error_type`` header (``ValueError``,
        ``Undeliverable``...).
      partition: Only this partition of the dead-letter topic.
      start_offset, end_offset: An inclusive range of offsets in the
        dead-letter topic; ``None`` leaves that side open.
    """

    actors: Sequence[str] = ()
    error_types: Sequence[str] = ()
    partition: int | None = None
    start_offset: int | None = None
    end_offset: int | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.actors and record.actor_name not in self.actors:
            return False
        if self.error_types and record.error_type not in self.error_types:
            return False
        return self.in_range(record.partition, record.offset)

    def in_range(self, partition: int, offset: int) -> bool:
        if self.partition is not None and partition != self.partition:
            return False
        if self.start_offset is not None and offset < self.start_offset:
            return False
        return self.end_offset is None or offset <= self.end_offset


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
        return KafkaConnectionError(f"Kafka is not reachable at {self.bootstrap_servers!r}: {error}")

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


def show(
    reader: DeadLetterReader, filters: Filters, *, limit: int | None = None, pending_only: bool = False
) -> Iterator[tuple[DeadLetterRecord, bool]]:
    """The dead letters matching ``filters``, each with whether the DLQ
    group already replayed it."""
    bounds = reader.bounds()
    replayed = reader.replayed(list(bounds))
    shown = 0
    start, end = {}, {}
    for partition, (low, high) in bounds.items():
        if filters.partition is not None and partition != filters.partition:
            continue
        start[partition] = max(low, filters.start_offset or 0)
        if pending_only:
            start[partition] = max(start[partition], replayed[partition][0])
        end[partition] = high if filters.end_offset is None else min(high, filters.end_offset + 1)
    for record in reader.read(start, end):
        committed, beyond = replayed[record.partition]
        done = record.offset < committed or record.offset in beyond
        if not filters.matches(record) or (pending_only and done):
            continue
        yield record, done
        shown += 1
        if limit is not None and shown >= limit:
            return


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

    def commit_point(self) -> tuple[int, list[int]]:
        """The offset to commit and the offsets replayed past it."""
        left = sorted(set(self.left))
        if not left:
            return self.stop, []
        watermark = left[0]
        missing = set(left)
        return watermark, [o for o in range(watermark + 1, self.stop) if o not in missing]


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
      records: In a dry run, the dead letters that would be sent.
    """

    examined: int = 0
    replayed: int = 0
    skipped: int = 0
    already: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    records: list[tuple[DeadLetterRecord, str]] = field(default_factory=list)
    #: Whether an interrupt (Ctrl-C) cut the replay short.
    interrupted: bool = False
    #: Sent but not acknowledged when the replay was cut short: not
    #: committed, so the next run sends them again.
    unconfirmed: int = 0
    #: Actor names of the dead letters examined.
    actors_seen: set[str] = field(default_factory=set)


#: Called with (examined so far, to examine in all, replayed so far).
Progress = Callable[[int, int, int], None]


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

    An interrupt (``KeyboardInterrupt``) stops the reading, waits for the
    acknowledgements of what was sent (up to ``timeout``), commits those,
    and returns with ``interrupted`` set: the next run sends only what
    was not acknowledged or not reached.
    """
    bounds = reader.bounds()
    replayed = reader.replayed(list(bounds))
    result = ReplayResult()
    partitions: dict[int, _PartitionReplay] = {}
    start, end = {}, {}
    for partition, (low, high) in bounds.items():
        committed, _ = replayed[partition]
        first = max(low, committed)
        stop = high
        if filters.partition is not None and partition != filters.partition:
            continue
        # Below the committed offset everything was replayed by an earlier run
        # (the first record left out stops the commit).
        below_from = max(low, filters.start_offset if filters.start_offset is not None else low)
        below_to = min(first, filters.end_offset + 1 if filters.end_offset is not None else first)
        result.already += max(0, below_to - below_from)
        start[partition], end[partition] = first, stop
        partitions[partition] = _PartitionReplay(first, stop)
    total = sum(max(0, end[p] - start[p]) for p in start)

    producer = None if dry_run else Producer(with_log({**PRODUCER_DEFAULTS, **config}, "replay producer"))
    lock = threading.Lock()
    unacknowledged: dict[tuple[int, int], str] = {}

    def on_delivery_of(partition: int, offset: int) -> Callable[[KafkaError | None, KafkaRecord], None]:
        def on_delivery(error: KafkaError | None, _record: KafkaRecord) -> None:
            with lock:
                if error is None:
                    unacknowledged.pop((partition, offset), None)
                else:
                    unacknowledged[(partition, offset)] = str(error)

        return on_delivery

    sent = 0
    reached: dict[int, int] = {}
    try:
        sent = _replay_records(
            reader,
            start,
            end,
            partitions,
            replayed,
            filters,
            result,
            reached,
            to_topic,
            producer,
            lock,
            unacknowledged,
            on_delivery_of,
            progress,
            total,
            send_omitted,
        )  # fmt: skip (the state replay() keeps, handed over as it is)
    except KeyboardInterrupt:
        result.interrupted = True
        sent = result.replayed
        # Nothing past what was reached is handled: the commit stops there.
        for partition, state in partitions.items():
            state.stop = reached.get(partition, state.start)
    result.replayed = sent

    if producer is not None:
        remaining = producer.flush(timeout)
        with lock:
            failures = dict(unacknowledged)
        for (partition, offset), reason in sorted(failures.items()):
            partitions[partition].left.append(offset)
            reason = reason if not remaining else f"{reason} within {timeout:g}s"
            if not result.interrupted:
                result.errors.append(f"{partition}/{offset}: {reason}")
        if result.interrupted:
            result.unconfirmed = len(failures)
        else:
            result.failed += len(failures)
        sent -= len(failures)
        offsets = []
        for partition, state in partitions.items():
            if state.stop <= state.start:
                continue
            watermark, beyond_list = state.commit_point()
            metadata = encode_done_past(watermark, beyond_list)
            if len(metadata) > MAX_METADATA:
                # Too many islands to list: the replayed ones past the cut
                # may be sent again by a later replay.
                get_logger(__name__).warning(
                    "Partition %d: %d replayed record(s) past offset %d cannot all be remembered.",
                    partition,
                    len(beyond_list),
                    watermark,
                )
                ranges = encode_offsets(beyond_list)
                metadata = ranges[: ranges.rfind(",", 0, MAX_METADATA)]
            offsets.append(
                TopicPartition(reader.topic, partition, watermark, metadata=METADATA_PREFIX + metadata)
            )
        if offsets:
            reader.commit(offsets)
    result.replayed = sent
    return result


def _replay_records(
    reader: DeadLetterReader,
    start: dict[int, int],
    end: dict[int, int],
    partitions: dict[int, _PartitionReplay],
    replayed: dict[int, tuple[int, set[int]]],
    filters: Filters,
    result: ReplayResult,
    reached: dict[int, int],
    to_topic: str | None,
    producer: Producer | None,
    lock: threading.Lock,
    unacknowledged: dict[tuple[int, int], str],
    on_delivery_of: Callable[[int, int], Callable[[KafkaError | None, KafkaRecord], None]],
    progress: Progress | None,
    total: int,
    send_omitted: bool,
) -> int:
    """The reading and sending of :func:`replay`; returns the records sent.
    ``result.replayed`` and ``reached`` (the next offset per partition) are
    kept current, for an interrupt to know where it stopped."""
    sent = 0
    for record in reader.read(start, end):
        state = partitions[record.partition]
        result.examined += 1
        if record.actor_name:
            result.actors_seen.add(record.actor_name)
        omitted = record.header("dead_letter_omitted")
        _, beyond = replayed[record.partition]
        if record.offset in beyond:
            result.already += 1
            _handled(state, record.offset)
        elif not filters.matches(record):
            result.skipped += 1
            _left(state, record.offset)
        elif (destination := to_topic or record.source_topic) is None:
            result.failed += 1
            result.errors.append(f"{record.partition}/{record.offset}: no source_topic header; use --to")
            _left(state, record.offset)
        elif omitted is not None and not send_omitted:
            # The job would arrive empty: say where the original is instead.
            result.failed += 1
            result.errors.append(
                f"{record.partition}/{record.offset}: not replayed, the dead letter lacks its "
                f"{omitted}; --send-omitted sends it as it is"
            )
            _left(state, record.offset)
        elif state.left and min(state.metadata_chars, _bitmap_chars(state, record.offset)) > MAX_METADATA:
            result.deferred += 1
            _left(state, record.offset)
        else:
            _handled(state, record.offset)
            if producer is None:
                result.records.append((record, destination))
                sent += 1
            else:
                with lock:
                    unacknowledged[(record.partition, record.offset)] = "not acknowledged"
                refused = _produce(
                    producer, destination, record, on_delivery_of(record.partition, record.offset)
                )
                if refused is None:
                    sent += 1
                else:
                    with lock:
                        unacknowledged.pop((record.partition, record.offset), None)
                    result.failed += 1
                    result.errors.append(f"{record.partition}/{record.offset}: {refused}")
                    _left(state, record.offset)
        result.replayed = sent
        # Last: an interrupt before this line leaves the record uncommitted (sent again, not lost).
        reached[record.partition] = record.offset + 1
        if progress is not None:
            progress(result.examined, total, sent)
    return sent


def _bitmap_chars(state: _PartitionReplay, offset: int) -> int:
    """The most characters the bitmap of replayed offsets up to ``offset`` takes."""
    # Streaming appends offsets in order: the first one left is the lowest.
    return 4 * ((offset - state.left[0]) // 8 // 3 + 1) + 2


def _handled(state: _PartitionReplay, offset: int) -> None:
    if state.last_left:
        state.metadata_chars += 2 * len(str(offset)) + 2
    state.last_left = False


def _left(state: _PartitionReplay, offset: int) -> None:
    state.left.append(offset)
    state.last_left = True


def _produce(
    producer: Producer,
    topic: str,
    record: DeadLetterRecord,
    on_delivery: Callable[[KafkaError | None, KafkaRecord], None],
) -> str | None:
    """Hand one record to librdkafka; why it refused it, if it did."""
    deadline = time.monotonic() + 60
    while True:
        try:
            producer.produce(
                topic, record.value, record.key, headers=record.original_headers, on_delivery=on_delivery
            )
            producer.poll(0)
            return None
        except BufferError:
            # Many records at once: wait for the local queue to drain.
            if time.monotonic() > deadline:
                return "the producer's queue stayed full for 60s"
            producer.poll(0.5)
        except KafkaException as e:
            return str(e.args[0])
