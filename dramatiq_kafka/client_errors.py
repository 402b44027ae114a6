"""The errors librdkafka reports outside any request (``error_cb``).

A failed SASL authentication or TLS handshake is not the answer to any call:
librdkafka retries the connection and reports the failure through the
client's ``error_cb``, while the call itself waits until its timeout and
then says the broker is unreachable.  :class:`ClientErrors` keeps that
report so that waits can end at once with an error that says why; a
refused broker certificate becomes a :class:`TLSHandshakeError` that says
what is wrong with it (``tls.py``).

The same goes for a Kafka that refuses connections (a wrong port, nothing
started): librdkafka knows within milliseconds ("all brokers down") but a
request waits out its timeout.  Before the client ever reached Kafka, that
report ends the wait with :class:`KafkaConnectionError`; once it did, an
outage is a restart or a failover, and waits run their course.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from confluent_kafka import KafkaError
from dramatiq.logging import get_logger

from . import tls
from .errors import AuthenticationError, KafkaConnectionError, TLSHandshakeError

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

# "(after 0ms in state CONNECT, 3 identical error(s) suppressed)": librdkafka's bookkeeping.
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state [^)]*\)")

#: Errors that say why a broker cannot be reached.
TRANSPORT_ERRORS = frozenset({KafkaError._TRANSPORT, KafkaError._RESOLVE})


def _is_tls_failure(error: KafkaError) -> bool:
    """A failed TLS handshake: librdkafka's ``_SSL``, or a refused certificate that it
    reported as a transport error (``ssl://host:port/bootstrap: error:0A000086:SSL
    routines::certificate verify failed``, when OpenSSL's error comes out of a read)."""
    if error.code() == KafkaError._SSL:
        return True
    return error.code() == KafkaError._TRANSPORT and tls.is_certificate_failure(error.str())


class ClientErrors:
    """The ``error_cb`` of one librdkafka client.

    Parameters:
      config(dict): The client's settings (``bootstrap.servers`` for
        messages, the ``ssl.*`` CA settings to tell why a certificate is
        refused).
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
        #: Whether a request of this client ever went through.
        self.reached = False
        # When librdkafka said all brokers were down, with no success since.
        self._down_since: float | None = None
        self._transport_reason = ""
        self.config = config
        # librdkafka's text of a TLS failure -> the error made of it (a handshake of our own each).
        self._tls_errors: dict[str, TLSHandshakeError] = {}

    def __call__(self, error: KafkaError) -> None:
        code = error.code()
        if code in TRANSPORT_ERRORS:
            self._transport_reason = error.str()
        elif code == KafkaError._ALL_BROKERS_DOWN and self._down_since is None:
            self._down_since = time.monotonic()
        if code not in AUTHENTICATION_ERRORS and not _is_tls_failure(error):
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
        self.reached = True
        self._down_since = None
        with self._lock:
            self._failure = None
            self._logged = False
        if self._tls_errors:
            # A certificate that works now may fail later for another reason.
            self._tls_errors.clear()

    def down_for(self) -> float:
        """Seconds since librdkafka said every broker was down, with no
        success since; ``0.0`` when it did not."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def unreachable(self) -> KafkaConnectionError:
        """The error of a Kafka that cannot be reached, with librdkafka's reason."""
        # The reason names the broker and the socket error, never a setting.
        reason = self._transport_reason.split("/bootstrap: ", 1)[-1] or "all brokers are down"
        reason = _STATE_SUFFIX.sub("", reason)
        return KafkaConnectionError(
            f"Kafka is not reachable at {self.servers!r} ({self.client}): {reason}. "
            "Check bootstrap_servers (or $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS) and that Kafka runs."
        )

    def unreachable_pending(self, pending: int) -> KafkaConnectionError:
        """:meth:`unreachable`, saying how many records wait in vain."""
        error = self.unreachable()
        return KafkaConnectionError(f"{error} {pending} record(s) are still pending.")

    def check_first_contact(self) -> None:
        """Raise :class:`KafkaConnectionError` when every broker is down and
        this client never reached Kafka: a wrong address, not an outage."""
        if not self.reached and self._down_since is not None:
            raise self.unreachable()

    def error(self) -> AuthenticationError:
        """The error of the failure last reported: :class:`TLSHandshakeError` for a TLS one."""
        failure = self._failure
        reason = failure.str() if failure is not None else "unknown reason"
        if failure is not None and _is_tls_failure(failure):
            return self.tls_error(reason)
        return AuthenticationError(
            f"Kafka authentication failed at {self.servers!r} ({self.client}): {reason}. "
            "Check security.protocol, sasl.mechanism, sasl.username and sasl.password "
            "(or the ssl.* settings) in the broker's config."
        )

    def tls_error(self, text: str) -> TLSHandshakeError:
        """The error of a failed TLS handshake, saying why when OpenSSL can tell.

        Made once per distinct failure (it may hand-shake with the broker again), then reused.
        """
        text = _STATE_SUFFIX.sub("", text)
        known = self._tls_errors.get(text)
        if known is None:
            known = self._tls_errors[text] = self._make_tls_error(text)
        return TLSHandshakeError(str(known), known.address, known.reason)

    def _make_tls_error(self, text: str) -> TLSHandshakeError:
        address = tls.broker_address(text)
        where = f"{address[0]}:{address[1]}" if address is not None else str(self.servers)
        detail = tls.librdkafka_reason(text)
        prefix = f"TLS handshake with Kafka failed at {where!r} ({self.client})"
        if not tls.is_certificate_failure(text):
            return TLSHandshakeError(
                f"{prefix}: {detail}. Check security.protocol and the ssl.* settings in the broker's config.",
                where,
                detail,
            )
        diagnosis = tls.diagnose(self.config, text)
        if diagnosis is None:
            return TLSHandshakeError(
                f"{prefix}: certificate verify failed: the broker's certificate could not be verified. "
                "Check that ssl.ca.location names the PEM file of the CA that signed the brokers' "
                f"certificates and that they have not expired (librdkafka: {detail}).",
                where,
                detail,
            )
        return TLSHandshakeError(
            f"{prefix}: certificate verify failed: {tls.advice(diagnosis, self.config)}.",
            where,
            diagnosis.reason,
        )

    def check(self) -> None:
        """Raise :class:`AuthenticationError` if an authentication failure is known."""
        if self._failure is not None:
            raise self.error()
