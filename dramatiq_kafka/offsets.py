"""Per-partition tracking of finished offsets and the committable watermark.

Kafka keeps one committed position per partition, so jobs that finish out of
order (eight worker threads acking as they please) must not move it past a job
that is still running.  :class:`PartitionOffsets` remembers which fetched
offsets are still outstanding and only lets the watermark move over a
contiguous run of finished ones.
"""

from __future__ import annotations

import threading
from collections import deque


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

    def commit_candidate(self) -> int | None:
        """The watermark, when it is ahead of what was last committed."""
        with self._lock:
            if self._watermark > self._committed:
                return self._watermark
            return None

    def committed(self, offset: int) -> None:
        """Record that ``offset`` was committed for this partition."""
        with self._lock:
            self._committed = max(self._committed, offset)
