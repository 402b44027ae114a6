"""What becomes of a job whose run failed: retried in place, sent again, or dead-lettered.

Plain decisions, with no Kafka in them: the consumer applies them to its
:class:`~dramatiq_kafka.scheduling.Scheduler`.

What counts as a failure: every ``Exception``, and Dramatiq's interrupts
(``TimeLimitExceeded``, ``Shutdown``), as Dramatiq's own ``Retries`` does.
An interpreter exit (``SystemExit``, ``KeyboardInterrupt``) is not the job's
fault: the job runs again in place after a backoff, spends none of its
budget, and is never dead-lettered.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from dramatiq.errors import Retry
from dramatiq.threading import Interrupt

from .retry_policy import RetryPolicy


@dataclass(frozen=True)
class RetryInPlace:
    """Run the same record again after ``delay`` ms; its partition starts
    nothing new meanwhile.  ``spent``: whether the run counted against the
    retry budget."""

    delay: int
    spent: bool = True


@dataclass(frozen=True)
class Requeue:
    """Send the job again with ``delay`` ms as its delay, and finish this
    record once Kafka has the copy (``retry_mode="requeue"``)."""

    delay: int


@dataclass(frozen=True)
class ToDeadLetters:
    """Write the record to the dead-letter topic; ``reason`` says why when
    the job's own error does not (a hook that raised)."""

    reason: str | None = None
    exhausted: bool = True


Outcome = RetryInPlace | Requeue | ToDeadLetters


def is_failure(error: BaseException) -> bool:
    """Whether ``error`` is the job's failure (rather than the interpreter exiting)."""
    return isinstance(error, (Exception, Interrupt))


def decide(
    policy: RetryPolicy,
    error: BaseException,
    *,
    failures: int,
    failures_in_a_row: int,
    shared_budget: bool,
    requeue: bool = False,
) -> Outcome:
    """The outcome of a failed run.

    Parameters:
      policy: The job's retry options.
      error: What the run raised.
      failures: The job's failed runs, this one included.
      failures_in_a_row: The partition's failures in a row, this one included.
      shared_budget: Whether the budget is the partition's failures in a row (an
        ordered queue with ``DeadLetter(independent=False)``) rather than
        the job's own failures.
      requeue: Retry by sending the job again (``retry_mode="requeue"``).
    """
    if not is_failure(error):
        return RetryInPlace(policy.backoff(max(failures, 0) + 1), spent=False)
    budget = failures_in_a_row if shared_budget else failures
    try:
        again = policy.should_retry(budget, error, retries=failures - 1)
    except Exception as e:  # the user's retry_when
        return ToDeadLetters(reason=f"retry_when raised {type(e).__name__}: {e}", exhausted=False)
    if not again:
        return ToDeadLetters()
    if isinstance(error, Retry) and error.delay is not None:
        delay = max(0, int(error.delay))
    else:
        delay = policy.backoff(max(failures, 1))
    return Requeue(delay) if requeue else RetryInPlace(delay)


def note_failure(options: dict[str, Any], outcome: Outcome, failures: int, error: BaseException) -> None:
    """What Dramatiq's ``Retries`` sets in a failed message's options, for callbacks and
    the next run: its failures, the traceback, and when it was sent again."""
    options["retries"] = failures
    options["traceback"] = "".join(traceback.format_exception(error, limit=30))
    if not isinstance(outcome, ToDeadLetters):
        options["requeue_timestamp"] = int(time.time() * 1000)
