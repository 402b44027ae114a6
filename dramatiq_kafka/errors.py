"""Errors raised by the Kafka broker, as subclasses of Dramatiq's own.

Every error the package raises to its users is a :class:`KafkaBrokerError`
(a Dramatiq ``BrokerError``), defined here; ``ContinuationError`` and
``InvalidContext`` are defined beside what raises them.  The errors of
the command line (``cli/exits.py``) and of the local Kafka tool
(``localkafka/``) are theirs alone.  :class:`JobFailure` is what is kept
of a job's error, not an error itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dramatiq.errors import BrokerConnectionError, BrokerError
from dramatiq.middleware import MiddlewareError


class KafkaBrokerError(BrokerError):
    """Base class for the errors of this package."""


class KafkaConnectionError(KafkaBrokerError, BrokerConnectionError, MiddlewareError):
    """Kafka could not be reached (or refused us) within the allowed time.

    A :class:`KafkaBrokerError`, and Dramatiq's
    :class:`~dramatiq.errors.BrokerConnectionError`.  It is also a
    :class:`MiddlewareError` so that raising it while a worker boots stops
    the worker (``dramatiq`` exits with code 3) instead of being logged and
    ignored.
    """


def not_reachable(bootstrap_servers: str, error: object) -> KafkaConnectionError:
    """The error of a request Kafka did not answer: names the servers and librdkafka's reason."""
    return KafkaConnectionError(f"Kafka is not reachable at {bootstrap_servers!r}: {error}")


class DeliveryError(KafkaBrokerError):
    """Kafka did not acknowledge one or more records.

    Attributes:
      failures(list[tuple[str, str]]): The ``(message_id, reason)`` of
        every record that was not delivered.
    """

    def __init__(self, message: str, failures: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class BufferFull(DeliveryError):
    """An async send found librdkafka's local queue full: rather than block
    the caller, the message is refused (nothing was sent)."""


class DeliveryTimeout(DeliveryError):
    """A synchronous send was not acknowledged within its timeout.

    The record may still be delivered later: librdkafka keeps retrying
    it until ``message.timeout.ms``.
    """


class ConfigurationError(KafkaBrokerError, MiddlewareError, ValueError):
    """A broker, queue or actor option has a value that cannot work."""


class ContextError(KafkaBrokerError, ValueError):
    """A value cannot be carried into a job (see ``CurrentContext``).

    Raised by ``send`` when a registered value is not JSON that comes back
    equal (a ``set``, a ``datetime``, an object) or is not a valid W3C
    trace header.  The error names the attribute, never its value, which
    may be a secret.

    Attributes:
      name(str): The carried name at fault (``"Current.tenant"``), or
        ``""`` when the context as a whole is.
    """

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class ContextTooLarge(ContextError):
    """The context carried into a job is larger than ``CurrentContext(max_bytes=...)``."""


class AuthenticationError(KafkaConnectionError):
    """Kafka refused the client's credentials (SASL) or its TLS handshake.

    Raised by the worker at boot, by ``send`` and by ``flush`` as soon as
    librdkafka reports the failure, rather than after a timeout: retrying
    with the same settings cannot succeed.
    """


class TLSHandshakeError(AuthenticationError):
    """The TLS handshake with a Kafka broker failed: most often this client
    refused the broker's certificate (expired, signed by a CA that
    ``ssl.ca.location`` does not hold, issued for another host name).

    Raised where :class:`AuthenticationError` is, as fast; the message says
    which of those it is and what to do.

    Attributes:
      address(str): The broker, ``host:port`` (``""`` when unknown).
      reason(str): OpenSSL's words for the refused certificate
        (``certificate has expired``), else librdkafka's.
    """

    def __init__(self, message: str, address: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.address = address
        self.reason = reason


class RequestRefused(KafkaBrokerError):
    """The dashboard refused a request; the message says why and what to do.

    Attributes:
      status(str): The HTTP status line it is answered with (``"403 Forbidden"``).
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class JobFailure(NamedTuple):
    """What is kept of a dead-lettered job's error for ``join(fail_fast=True)``:
    not the exception itself, which would keep its traceback's frames (and
    their locals) alive.

    Attributes:
      message_id(str): The job's message id.
      error_type(type): The class of its error.
      args(tuple): The error's arguments.
      text(str): ``str()`` of the error.
    """

    message_id: str
    error_type: type[BaseException]
    args: tuple[Any, ...]
    text: str

    @classmethod
    def of(cls, error: BaseException | None, message_id: str) -> JobFailure:
        if error is None:
            return cls(message_id, Exception, (), f"Message {message_id} failed with an unknown error")
        return cls(message_id, type(error), error.args, str(error))

    def exception(self) -> BaseException:
        """The error again, as a new exception of its class where it can be made."""
        try:
            return self.error_type(*self.args)
        except Exception:
            return KafkaBrokerError(f"{self.error_type.__name__}: {self.text}")
