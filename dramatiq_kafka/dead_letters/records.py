"""A dead letter as read back, and the filters that pick dead letters.

:class:`DeadLetterRecord` decodes one record of a dead-letter topic (the
job, its origin, its error); :class:`Filters` says which ones a command
looks at.  Nothing here talks to Kafka: ``reader.py`` reads the topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Message as KafkaRecord

from ..wire import ACTOR_HEADER, MESSAGE_ID_HEADER, Headers
from . import headers as names


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
        return [(key, value) for key, value in self.headers if key not in names.DEAD_LETTER_HEADERS]

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
        return self.header(names.ERROR_TYPE)

    @property
    def source_topic(self) -> str | None:
        return self.header(names.SOURCE_TOPIC)

    def asdict(self, *, traceback: bool = False) -> dict[str, Any]:
        """What ``dlq show`` prints: the job, its origin and its error."""
        message = self.message
        source_partition = self.header(names.SOURCE_PARTITION)
        source_offset = self.header(names.SOURCE_OFFSET)
        attempts = self.header(names.SOURCE_ATTEMPTS)
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
            "source_consumer_group": self.header(names.SOURCE_CONSUMER_GROUP),
            "source_attempts": int(attempts) if attempts else None,
            "error_type": self.error_type,
            "error_message": self.header(names.ERROR_MESSAGE),
        }
        if message is None:
            shown["value"] = None if self.value is None else self.value.decode(errors="replace")
        if traceback:
            shown["error_traceback"] = self.header(names.ERROR_TRACEBACK)
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
      picks: Only these ``(partition, offset)`` dead letters (the dashboard's
        selection); empty, all.
    """

    actors: Sequence[str] = ()
    error_types: Sequence[str] = ()
    partition: int | None = None
    start_offset: int | None = None
    end_offset: int | None = None
    picks: frozenset[tuple[int, int]] = frozenset()

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.actors and record.actor_name not in self.actors:
            return False
        if self.error_types and record.error_type not in self.error_types:
            return False
        return self.in_range(record.partition, record.offset)

    def in_range(self, partition: int, offset: int) -> bool:
        if self.partition is not None and partition != self.partition:
            return False
        if self.picks and (partition, offset) not in self.picks:
            return False
        if self.start_offset is not None and offset < self.start_offset:
            return False
        return self.end_offset is None or offset <= self.end_offset
