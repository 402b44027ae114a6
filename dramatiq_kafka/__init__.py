"""dramatiq-kafka: an Apache Kafka broker for Dramatiq.

The public names, gathered from the modules they live in (one idea a
module: ``docs/architecture.md`` lists them); nothing is defined here but
the version.
"""

from .broker import BOOTSTRAP_SERVERS_ENV, KafkaBroker
from .bulk import send_many
from .current import CurrentAttributes
from .errors import (
    AuthenticationError,
    BufferFull,
    ConfigurationError,
    ContextError,
    ContextTooLarge,
    DeliveryError,
    DeliveryTimeout,
    KafkaBrokerError,
    KafkaConnectionError,
    RequestRefused,
    TLSHandshakeError,
)
from .middleware.context import CurrentContext, InvalidContext
from .middleware.revocation import current_message, revoked
from .partitions import KafkaMessageProxy, ShareMessageProxy
from .queue_config import DeadLetter, QueueConfig
from .tracecontext import TraceContext

__version__ = "0.1.0"

__all__ = [
    "BOOTSTRAP_SERVERS_ENV",
    "AuthenticationError",
    "BufferFull",
    "ConfigurationError",
    "ContextError",
    "ContextTooLarge",
    "CurrentAttributes",
    "CurrentContext",
    "DeadLetter",
    "DeliveryError",
    "DeliveryTimeout",
    "InvalidContext",
    "KafkaBroker",
    "KafkaBrokerError",
    "KafkaConnectionError",
    "KafkaMessageProxy",
    "QueueConfig",
    "RequestRefused",
    "ShareMessageProxy",
    "TLSHandshakeError",
    "TraceContext",
    "current_message",
    "revoked",
    "send_many",
]
