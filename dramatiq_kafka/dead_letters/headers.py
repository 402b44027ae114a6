"""The names of the headers a dead letter carries beside the original's.

Defined here once, for the writer that adds them and the reader that
reads them (``docs/wire-format.md`` describes them for other languages).
Nothing here reads or writes Kafka.
"""

from __future__ import annotations

from typing import Final

#: The topic, partition and offset the record was consumed from.
SOURCE_TOPIC: Final = "source_topic"
SOURCE_PARTITION: Final = "source_partition"
SOURCE_OFFSET: Final = "source_offset"
#: The consumer group that gave up on it.
SOURCE_CONSUMER_GROUP: Final = "source_consumer_group"
#: How many times its job ran.
SOURCE_ATTEMPTS: Final = "source_attempts"
#: The class name of its last error (``Undeliverable`` when there was none).
ERROR_TYPE: Final = "error_type"
ERROR_MESSAGE: Final = "error_message"
#: The end of the traceback of its last error.
ERROR_TRACEBACK: Final = "error_traceback"
#: Set when the record was too large to copy whole: what was left out.
DEAD_LETTER_OMITTED: Final = "dead_letter_omitted"

#: Every header the dead-letter writer adds; a replay leaves them out.
DEAD_LETTER_HEADERS: Final = frozenset(
    {
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        SOURCE_CONSUMER_GROUP,
        SOURCE_ATTEMPTS,
        ERROR_TYPE,
        ERROR_MESSAGE,
        ERROR_TRACEBACK,
        DEAD_LETTER_OMITTED,
    }
)
