"""Middleware that adds Kafka record headers to the messages it sees enqueued."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from ..wire import Headers


class RecordHeaders(Middleware):
    """Base class of middleware that writes headers beside a message.

    ``KafkaBroker.enqueue`` calls :meth:`record_headers` of every such
    middleware and adds what it returns to the record.  In the worker, the
    headers are on ``message.record.headers()`` (a ``KafkaMessageProxy``).
    """

    def record_headers(self, broker: dramatiq.Broker, message: Message[Any]) -> Headers:
        """The headers to add to the record of ``message``."""
        return []
