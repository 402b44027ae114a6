"""Dead letters: writing them, reading them back, and replaying them.

One module per job: ``headers.py`` names the headers a dead letter
carries, ``writer.py`` writes dead letters for the consumer,
``records.py`` decodes them and holds the filters, ``reader.py`` reads a
dead-letter topic and its DLQ group's commits, ``replay.py`` sends them
back.  The command that shows and replays them is ``cli/dlq.py``.
"""

from .headers import DEAD_LETTER_HEADERS
from .reader import METADATA_PREFIX, DeadLetterReader, dlq_group_for, newest, show
from .records import DeadLetterRecord, Filters
from .replay import MAX_METADATA, Progress, ReplayResult, replay
from .writer import (
    MAX_ERROR_MESSAGE_BYTES,
    MAX_KEPT_HEADER_BYTES,
    MAX_TRACEBACK_BYTES,
    SIZE_ERRORS,
    DeadLetterWriter,
    dead_letter_headers,
    without_large_parts,
)

__all__ = [
    "DEAD_LETTER_HEADERS",
    "MAX_ERROR_MESSAGE_BYTES",
    "MAX_KEPT_HEADER_BYTES",
    "MAX_METADATA",
    "MAX_TRACEBACK_BYTES",
    "METADATA_PREFIX",
    "SIZE_ERRORS",
    "DeadLetterReader",
    "DeadLetterRecord",
    "DeadLetterWriter",
    "Filters",
    "Progress",
    "ReplayResult",
    "dead_letter_headers",
    "dlq_group_for",
    "newest",
    "replay",
    "show",
    "without_large_parts",
]
