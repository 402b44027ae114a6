"""Delayed messages: which ones are delayed, and where in the delay topic they go.

A message sent with a ``delay`` or a future ``eta`` is written to its
queue's delay topic (``{queue}.DQ``), in the partition of its *tier*: delays
of similar length share partitions, so the records of one partition fall
due roughly in the order they were written.  The delay topic's consumer,
which moves each record to its queue when due, is ``delay_consumer.py``.
See ``docs/delays.md``.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from datetime import datetime
from typing import Any, TypeGuard

from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.message import Message

from .errors import ConfigurationError

__all__ = ["TIERS", "TIER_BOUNDS", "as_sent", "delay_partition", "delay_tier", "is_eta", "tier_partitions"]

#: Upper bounds (ms) of the delay tiers; delays above the last share one tier.
TIER_BOUNDS = (1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000, 21_600_000, 86_400_000)
#: How many tiers there are.
TIERS = len(TIER_BOUNDS) + 1

_spread = itertools.count()


def delay_tier(delay: int) -> int:
    """The tier of a delay in milliseconds: 0 for up to 1 s, 1 for up to 5 s, ..."""
    return bisect_left(TIER_BOUNDS, delay)


def tier_partitions(tier: int, partitions: int) -> range:
    """The partitions of the delay topic that hold ``tier``: tiers are
    spread over the partitions in order, neighbours sharing when there are
    fewer partitions than tiers."""
    first = tier * partitions // TIERS
    return range(first, max((tier + 1) * partitions // TIERS, first + 1))


def delay_partition(delay: int, partitions: int) -> int:
    """The partition of the delay topic a ``delay`` (ms) goes to, taking a
    tier's partitions in turn."""
    choices = tier_partitions(delay_tier(delay), partitions)
    return choices[next(_spread) % len(choices)]


def is_eta(eta: object) -> TypeGuard[int | float]:
    """Whether an ``eta`` option is one: milliseconds since the epoch."""
    return not isinstance(eta, bool) and isinstance(eta, (int, float))


def as_sent(message: Message[Any], delay: int | None) -> tuple[Message[Any], int | None]:
    """The message as it goes to Kafka, and its delay (ms): a ``delay`` or a
    future ``eta`` option sends it to its delay queue.

    Raises:
      ConfigurationError: When its ``eta`` is neither epoch milliseconds nor
        a timezone-aware datetime.
    """
    eta = message.options.get("eta")
    if delay is None and eta is not None and not message.queue_name.endswith(".DQ"):
        if isinstance(eta, datetime):
            if eta.tzinfo is None:
                raise ConfigurationError(
                    f"message {message.message_id}: eta={eta!r} has no time zone; "
                    "give an aware datetime (datetime.now(UTC) + ...)"
                )
            eta = int(eta.timestamp() * 1000)
        if not is_eta(eta):
            raise ConfigurationError(
                f"message {message.message_id}: eta={eta!r} must be milliseconds since the epoch "
                "or a timezone-aware datetime"
            )
        delay = int(eta) - current_millis()
        if delay <= 0:
            message = message.copy()
            del message.options["eta"]
            return message, None
    if delay is None:
        return message, None
    delay = max(0, delay)
    queue_name = dq_name(q_name(message.queue_name))
    return message.copy(queue_name=queue_name, options={"eta": current_millis() + delay}), delay
