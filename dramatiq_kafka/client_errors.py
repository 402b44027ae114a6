"""The errors librdkafka reports outside any request (``error_cb``).

A failed SASL authentication or TLS handshake is not the answer to any call:
librdkafka retries the connection and reports the failure through the
client's ``error_cb``, while the call itself waits until its timeout and
then says the broker is unreachable.  :class:`ClientErrors` keeps that
report so that waits can end at once with an error that says why.
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import KafkaError
from dramatiq.logging import get_logger

from .errors import AuthenticationError

#: Errors that repeating the same request with the same settings cannot fix.
AUTHENTICATION_ERRORS = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)


class ClientErrors:
    """The ``error_cb`` of one librdkafka client.

    Parameters:
      config(dict): The client's settings (for ``bootstrap.servers`` in
        messages).
      client(str): What the client is, for logs (``"producer"``).
      raise_failure(bool): Raise :class:`AuthenticationError` from the
        callback itself, so that it comes out of the ``poll()`` or
        ``consume()`` that served it (the consumer's way of failing).
    """

    def __init__(self, config: dict[str, Any], client: str, *, raise_failure: bool = False) -> None:
        self.logger = get_logger(__name__, type(self))
        self.servers = config.get("bootstrap.servers")
        self.client = client
        self.raise_failure = raise_failure
        self._lock = threading.Lock()
        self._failure: KafkaError | None = None
        self._logged = False

    def __call__(self, error: KafkaError) -> None:
        if error.code() not in AUTHENTICATION_ERRORS:
            # Transport errors and "all brokers down" come and go; librdkafka
            # reconnects and the calls waiting on them time out on their own.
            self.logger.debug("Kafka %s: %s", self.client, error.str())
            return
        with self._lock:
            self._failure = error
            first, self._logged = not self._logged, True
        if first:
            self.logger.error("%s", self.error())
        if self.raise_failure:
            raise self.error()

    @property
    def failure(self) -> KafkaError | None:
        """The authentication failure last reported, if no success came since."""
        return self._failure

    def succeeded(self) -> None:
        """A request went through: the credentials work (again)."""
        with self._lock:
            self._failure = None
            self._logged = False

    def error(self) -> AuthenticationError:
        failure = self._failure
        reason = failure.str() if failure is not None else "unknown reason"
        return AuthenticationError(
            f"Kafka authentication failed at {self.servers!r} ({self.client}): {reason}. "
            "Check security.protocol, sasl.mechanism, sasl.username and sasl.password "
            "(or the ssl.* settings) in the broker's config."
        )

    def check(self) -> None:
        """Raise :class:`AuthenticationError` if an authentication failure is known."""
        if self._failure is not None:
            raise self.error()
