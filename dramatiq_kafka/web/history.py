"""What the dashboard remembers of each queue: its lag and offsets over the last hour.

Kafka keeps no history of a group's lag, so the dashboard samples it (every
``interval`` seconds, on a thread of its own while the application lives) and keeps the
samples of the last ``window`` seconds in memory: the lag trend and the jobs per second in
(end offsets growing) and out (committed offsets growing) come from them.  Nothing here talks
to Kafka; ``readings.py`` takes the samples.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["QueueHistory", "QueueSample"]


@dataclass(frozen=True)
class QueueSample:
    """A queue's partitions at one time, summed.

    Attributes:
      at(float): Seconds since the epoch.
      end(int): The sum of the end offsets: every job ever sent, deleted ones included.
      committed(int): The sum of the committed offsets (a partition with none counts its low watermark).
      lag(int): Jobs sent and not finished.
    """

    at: float
    end: int
    committed: int
    lag: int


class QueueHistory:
    """The samples of every queue over the last ``window`` seconds.

    Parameters:
      window(float): Seconds of samples kept.
    """

    def __init__(self, window: float = 3600.0) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._samples: dict[str, deque[QueueSample]] = {}

    def add(self, queue: str, sample: QueueSample) -> None:
        with self._lock:
            samples = self._samples.setdefault(queue, deque())
            if samples and sample.at <= samples[-1].at:
                return  # the clock went back, or a sample of the same reading
            samples.append(sample)
            while samples and samples[0].at < sample.at - self.window:
                samples.popleft()

    def samples(self, queue: str) -> list[QueueSample]:
        with self._lock:
            return list(self._samples.get(queue, ()))

    def throughput(self, queue: str) -> list[tuple[float, float, float]]:
        """``(time, jobs/s sent, jobs/s finished)`` between each two samples.  Offsets
        going back (a topic recreated) count as none."""
        return [
            (b.at, max(0, b.end - a.end) / (b.at - a.at), max(0, b.committed - a.committed) / (b.at - a.at))
            for a, b in itertools.pairwise(self.samples(queue))
        ]

    def rates(self, queue: str) -> tuple[float, float] | None:
        """Jobs per second sent and finished between the last two samples; ``None``
        before there are two."""
        throughput = self.throughput(queue)
        return throughput[-1][1:] if throughput else None
