"""Sending many jobs of one actor in one go."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.message import Message

from .broker import KafkaBroker


def send_many(
    actor: dramatiq.Actor[Any, Any], arguments: Iterable[Any], **options: Any
) -> list[Message[Any]]:
    """Enqueue one job of ``actor`` per item of ``arguments`` through
    :meth:`KafkaBroker.enqueue_many` (so ``dispatch_many_method`` applies).

    Each item is the job's positional arguments as a tuple, or its keyword
    arguments as a dict; ``options`` go to every message, as with
    ``send_with_options``.

    Example:
      >>> send_many(add, [(1, 2), (3, 4)])
    """
    broker = actor.broker
    if not isinstance(broker, KafkaBroker):
        raise TypeError(f"send_many needs a KafkaBroker, not {type(broker).__name__}")
    messages = [
        actor.message_with_options(kwargs=item, **options)
        if isinstance(item, dict)
        else actor.message_with_options(args=item if isinstance(item, tuple) else (item,), **options)
        for item in arguments
    ]
    return broker.enqueue_many(messages)
