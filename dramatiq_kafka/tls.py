"""Why a TLS handshake with Kafka failed, in words an operator can act on.

librdkafka reports every refused broker certificate the same way: ``SSL
handshake failed: ...certificate verify failed: broker certificate could not
be verified, verify that ssl.ca.location is correctly configured``, whether
the certificate expired, was signed by another CA or names another host.
OpenSSL knew which; librdkafka does not pass it on.  :func:`diagnose` asks
again with Python's ``ssl`` module (one handshake with the same CA settings,
once per failure) and :func:`advice` turns OpenSSL's verify code into what
to do.  Only certificates are read: no key, no password.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

#: Seconds the second handshake may take: a broker that just answered the first one answers fast.
DIAGNOSIS_TIMEOUT = 3.0

# "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: ..." and "sasl_ssl://host:9094/1: ...".
_BROKER = re.compile(r"^(?:sasl_)?ssl://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)/")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state [^)]*\)")

# OpenSSL's X509_V_ERR_* codes.
_EXPIRED, _NOT_YET_VALID = 10, 9
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})
_NAME_MISMATCH = frozenset({62, 63, 64})


@dataclass(frozen=True)
class Diagnosis:
    """What OpenSSL said of a broker's certificate.

    Attributes:
      address(str): The broker (``host:port``).
      code(int): OpenSSL's verify code (10: expired).
      reason(str): OpenSSL's words (``certificate has expired``).
    """

    address: str
    code: int
    reason: str


def is_certificate_failure(text: str) -> bool:
    """Whether librdkafka's error text is a refused broker certificate."""
    return "certificate verify failed" in text


def broker_address(text: str) -> tuple[str, int] | None:
    """The broker that librdkafka's error text is about."""
    match = _BROKER.match(text)
    if match is None:
        return None
    return match["host"].strip("[]"), int(match["port"])


def librdkafka_reason(text: str) -> str:
    """librdkafka's error text without the broker prefix and its state bookkeeping."""
    if _BROKER.match(text):
        text = text.split(": ", 1)[-1]
    return _STATE_SUFFIX.sub("", text)


def context_of(config: dict[str, Any]) -> ssl.SSLContext:
    """An ``SSLContext`` verifying as a librdkafka client with these settings does."""
    location = config.get("ssl.ca.location")
    inline = config.get("ssl.ca.pem")
    if location and location != "probe":
        folder = os.path.isdir(location)
        context = ssl.create_default_context(
            cafile=None if folder else location, capath=location if folder else None
        )
    elif inline:
        context = ssl.create_default_context(cadata=str(inline))
    else:
        # Neither set, or "probe": the system's CAs, as librdkafka uses them.
        context = ssl.create_default_context()
    algorithm = str(config.get("ssl.endpoint.identification.algorithm", "https")).lower()
    context.check_hostname = algorithm == "https"
    return context


def diagnose(config: dict[str, Any], text: str, timeout: float = DIAGNOSIS_TIMEOUT) -> Diagnosis | None:
    """Hand-shake again with the broker librdkafka's ``text`` names and return
    why its certificate is refused; ``None`` when that cannot be told (the
    broker is gone, or Python's OpenSSL accepts what librdkafka's refused)."""
    address = broker_address(text)
    if address is None or not is_certificate_failure(text):
        return None
    host, port = address
    try:
        context = context_of(config)
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as e:
        return Diagnosis(f"{host}:{port}", int(e.verify_code), str(e.verify_message))
    except (OSError, ValueError):
        return None


def advice(diagnosis: Diagnosis, config: dict[str, Any]) -> str:
    """What is wrong with the broker's certificate and what to do, for an error message."""
    location = config.get("ssl.ca.location")
    trusted = f"ssl.ca.location {location!r}" if location else "the CAs this client trusts"
    if diagnosis.code == _EXPIRED:
        return (
            f"the certificate of the broker at {diagnosis.address} has expired. Renew it (and check "
            "this machine's clock)"
        )
    if diagnosis.code == _NOT_YET_VALID:
        return (
            f"the certificate of the broker at {diagnosis.address} is not valid yet. Check the clocks "
            "of this machine and of the one that issued it"
        )
    if diagnosis.code in _UNKNOWN_ISSUER:
        return (
            f"the broker's certificate is not signed by a CA in {trusted} ({diagnosis.reason}). Set "
            "ssl.ca.location to the PEM file of the CA that signed the brokers' certificates"
        )
    if diagnosis.code in _NAME_MISMATCH:
        host = diagnosis.address.rsplit(":", 1)[0]
        return (
            f"the broker's certificate is not issued for {host!r} ({diagnosis.reason}). Connect with "
            "a host name its subjectAltName lists, or issue it for this one"
        )
    return f"the broker's certificate is refused ({diagnosis.reason}). Check it against {trusted}"
