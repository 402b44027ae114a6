"""Per-partition tracking of finished offsets and the committable watermark.

Kafka keeps one committed position per partition, so jobs that finish out of
order (eight worker threads acking as they please) must not move it past a job
that is still running.  :class:`PartitionOffsets` remembers which fetched
offsets are still outstanding and only lets the watermark move over a
contiguous run of finished ones.

The offsets finished past the watermark (dead letters replayed, delayed
records moved) travel in the commit's metadata: their encoding, and the
one bound on its length, are here too.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


class PartitionOffsets:
    """The offsets of one assigned partition, from fetch to commit.

    Offsets must be tracked in the order Kafka delivers them (increasing);
    they may be marked done in any order, from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding: deque[int] = deque()
        self._unfinished: set[int] = set()
        self._done: set[int] = set()
        self._watermark = -1
        self._committed = -1

    @property
    def unfinished(self) -> int:
        """The number of tracked offsets whose jobs have not finished."""
        return len(self._unfinished)

    def track(self, offset: int) -> None:
        """Remember a fetched offset that is about to be handed out."""
        with self._lock:
            if self._outstanding and offset <= self._outstanding[-1]:
                raise ValueError(f"offset {offset} tracked out of order (last {self._outstanding[-1]})")
            self._outstanding.append(offset)
            self._unfinished.add(offset)

    def mark_done(self, offset: int) -> bool:
        """Mark a tracked offset as finished.  Offsets that are not
        tracked (or already done) are ignored.

        Returns:
          bool: Whether the committable watermark moved.
        """
        with self._lock:
            if offset not in self._unfinished:
                return False
            self._unfinished.remove(offset)
            self._done.add(offset)
            moved = False
            while self._outstanding and self._outstanding[0] in self._done:
                finished = self._outstanding.popleft()
                self._done.discard(finished)
                self._watermark = finished + 1
                moved = True
            return moved

    @property
    def watermark(self) -> int:
        """The next offset to read once every finished job is committed."""
        return self._watermark

    @property
    def last_committed(self) -> int:
        """The offset last committed for this partition by this consumer (``-1``: none yet)."""
        return self._committed

    @property
    def fetched(self) -> int:
        """The offset after the last one fetched (``-1``: none yet)."""
        with self._lock:
            if self._outstanding:
                return self._outstanding[-1] + 1
            return self._watermark

    def position(self) -> tuple[int, list[int]] | None:
        """Where the partition stands: the first unfinished offset (where a
        new owner must start) and the offsets finished past it, sorted.
        ``None`` before anything was tracked."""
        with self._lock:
            if self._outstanding:
                return self._outstanding[0], sorted(self._done)
            return (self._watermark, []) if self._watermark >= 0 else None

    def committed(self, offset: int) -> None:
        """Record that ``offset`` was committed for this partition."""
        with self._lock:
            self._committed = max(self._committed, offset)


# -- offsets finished past a watermark, in commit metadata ----------------------------------------


#: The longest commit metadata written (Kafka's ``offset.metadata.max.bytes`` is 4096).
MAX_METADATA = 3500


#: Ranges this short are kept as they are: compressing a bitmap costs more than they do.
SHORT_RANGES = 64


def encode_offsets(offsets: Sequence[int]) -> str:
    """Sorted offsets as ranges: ``[5, 6, 7, 9]`` → ``"5-7,9"``."""
    parts: list[str] = []
    start = previous = None
    for offset in offsets:
        if previous is not None and offset == previous + 1:
            previous = offset
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = offset
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)


def decode_offsets(text: str) -> set[int]:
    """The offsets of :func:`encode_offsets`' text.

    Raises:
      ValueError: When the text is not such ranges.
    """
    offsets: set[int] = set()
    for part in filter(None, text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ValueError(f"not an offset range: {part!r}")
        start = int(match[1])
        offsets.update(range(start, int(match[2] or start) + 1))
    return offsets


def encode_done_past(committed: int, offsets: Sequence[int]) -> str:
    """Commit metadata listing sorted ``offsets`` finished past ``committed``
    (dead letters replayed, delayed records moved):
    ranges (``"5-7,9"``), or where shorter, a compressed bitmap of the
    offsets after ``committed`` (``"z:<base64>"``) — interleaved offsets
    take a bit each."""
    ranges = encode_offsets(offsets)
    if len(ranges) <= SHORT_RANGES:
        return ranges
    bits = bytearray((offsets[-1] - committed - 1) // 8 + 1)
    for offset in offsets:
        index = offset - committed - 1
        bits[index >> 3] |= 1 << (index & 7)
    packed = "z:" + base64.b64encode(zlib.compress(bytes(bits), 9)).decode()
    return min(ranges, packed, key=len)


def encode_done_past_within(
    committed: int, offsets: Sequence[int], limit: int = MAX_METADATA
) -> tuple[str, int]:
    """:func:`encode_done_past` of as many of the sorted ``offsets`` as fit
    in ``limit`` characters, the lowest first (they are read first); the
    text and how many offsets it lists.  Those left out are handled again
    by a later owner of the partition (at least once)."""
    kept = list(offsets)
    text = encode_done_past(committed, kept)
    while len(text) > limit:
        kept = kept[: len(kept) // 2]
        text = encode_done_past(committed, kept)
    return text, len(kept)


def decode_done_past(committed: int, text: str) -> set[int]:
    """The offsets of :func:`encode_done_past`' text.

    Raises:
      ValueError: When the text is neither ranges nor a bitmap.
    """
    if not text.startswith("z:"):
        return decode_offsets(text)
    try:
        bits = zlib.decompress(base64.b64decode(text[2:], validate=True))
    except (binascii.Error, zlib.error) as e:
        raise ValueError(f"not an offset bitmap: {e}") from None
    return {
        committed + 1 + 8 * index + bit
        for index, byte in enumerate(bits)
        if byte
        for bit in range(8)
        if byte >> bit & 1
    }


# -- a partition's progress, for its next owner -----------------------------------------------------

#: Marks commit metadata written by :func:`encode_progress`.
PROGRESS_PREFIX = "dramatiq-kafka-done:"
#: The metadata of earlier versions' delay consumers (records moved), still read.
MOVED_PREFIX = "dramatiq-kafka-moved:"


@dataclass(frozen=True)
class PartitionProgress:
    """Where a partition stands, committed for whoever owns it next.

    Attributes:
      offset: The first unfinished offset (Kafka's committed offset).
      done: Offsets past it that are finished (jobs that succeeded behind one
        still waiting, delayed records moved), sorted: the next owner skips them.
      failures: The failed runs of unfinished jobs past it, by offset: the next
        owner carries on with their retry counts instead of starting again.
    """

    offset: int
    done: tuple[int, ...] = ()
    failures: dict[int, int] = field(default_factory=dict)


def encode_progress(progress: PartitionProgress, limit: int = MAX_METADATA) -> str:
    """Commit metadata for ``progress``: ``dramatiq-kafka-done:<done>[;f=<offset>:<n>,...]``,
    at most ``limit`` characters; what does not fit is left out, the highest offsets first
    (their jobs then run again, or start their retries afresh: at least once)."""
    failures = ""
    for offset, count in sorted(progress.failures.items()):  # a quarter of the room at most
        longer = f"{failures},{offset}:{count}" if failures else f"{offset}:{count}"
        if len(longer) > limit // 4:
            break
        failures = longer
    room = limit - len(PROGRESS_PREFIX) - (len(failures) + 3 if failures else 0)
    done, _ = encode_done_past_within(progress.offset, progress.done, room)
    return PROGRESS_PREFIX + done + (f";f={failures}" if failures else "")


def decode_progress(offset: int, metadata: str | None) -> PartitionProgress:
    """The progress committed with ``offset`` and its ``metadata``; metadata of
    other writers says nothing (an empty progress).

    Raises:
      ValueError: When the metadata is this library's but malformed.
    """
    metadata = metadata or ""
    if metadata.startswith(MOVED_PREFIX):
        return PartitionProgress(
            offset, tuple(sorted(decode_done_past(offset, metadata[len(MOVED_PREFIX) :])))
        )
    if not metadata.startswith(PROGRESS_PREFIX):
        return PartitionProgress(offset)
    done, _, failures = metadata[len(PROGRESS_PREFIX) :].partition(";f=")
    counts = {}
    for part in filter(None, failures.split(",")):
        match = re.fullmatch(r"(\d+):(\d+)", part)
        if match is None:
            raise ValueError(f"not a failure count: {part!r}")
        counts[int(match[1])] = int(match[2])
    return PartitionProgress(offset, tuple(sorted(decode_done_past(offset, done))), counts)
