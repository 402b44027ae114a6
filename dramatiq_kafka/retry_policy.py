"""``RetryPolicy``: how often a failed job runs again, and how long its partition waits.

The budget and the backoff only; which outcome a failure has is
``outcomes.py``'s, and the middleware that reads the retry options of
actors and messages is ``middleware/retries.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Retries before a job is dead-lettered when no level sets ``max_retries``.
DEFAULT_MAX_RETRIES = 3
#: Milliseconds before the first retry.  Short: the whole partition waits.
DEFAULT_MIN_BACKOFF = 1_000
#: The longest wait between retries, in milliseconds.  Dramatiq's own default
#: (7 days) suits a message set aside, not a partition standing still.
DEFAULT_MAX_BACKOFF = 60_000


def backoff_ms(failures: int, min_backoff: int, max_backoff: int) -> int:
    """The wait after the ``failures``-th failure: doubling, capped."""
    if failures < 1:
        raise ValueError(f"failures must be 1 or more, not {failures}")
    # Cap the exponent first: 2 ** 10_000 is a big integer for nothing.
    return min(max_backoff, min_backoff * 2 ** min(failures - 1, 62))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RetryPolicy:
    """What happens to a job that failed.

    Parameters:
      max_retries: Retries before dead-lettering; ``None`` retries forever.
      min_backoff, max_backoff: Bounds of the wait, in milliseconds.
      independent: Whether the budget is the job's own or its partition's.
      retry_when: Dramatiq's ``retry_when(retries, exception)``; when set it
        decides instead of ``max_retries``.
      on_exhausted: The name of an actor sent ``(message, {"retries",
        "max_retries"})`` when the job is dead-lettered after its retries
        (Dramatiq's ``on_retry_exhausted``).
    """

    max_retries: int | None = DEFAULT_MAX_RETRIES
    min_backoff: int = DEFAULT_MIN_BACKOFF
    max_backoff: int = DEFAULT_MAX_BACKOFF
    independent: bool = False
    retry_when: Callable[[int, BaseException], bool] | None = None
    on_exhausted: str | None = None

    def should_retry(self, failures: int, exception: BaseException, *, retries: int | None = None) -> bool:
        """Whether to run again after ``failures`` failures of the budget
        (this one included).  ``retries``: the job's own retries before this
        failure, what ``retry_when`` is given (``failures - 1`` by default)."""
        if self.retry_when is not None:
            # Dramatiq passes the retries made before this failure.
            return bool(self.retry_when(failures - 1 if retries is None else retries, exception))
        return self.max_retries is None or failures <= self.max_retries

    def backoff(self, failures: int) -> int:
        return backoff_ms(failures, self.min_backoff, self.max_backoff)
