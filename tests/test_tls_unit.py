"""How a refused broker certificate is read and explained (no Kafka; tests/test_tls.py has the real ones)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from dramatiq_kafka import AuthenticationError, KafkaConnectionError, TLSHandshakeError, localkafka, tls
from dramatiq_kafka.client_errors import ClientErrors
from tests.certificates import make_authority, make_keystore

VERIFY_FAILED = (
    "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
    "verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly "
    "configured or root CA certificates are installed (install ca-certificates package) (after 4ms in "
    "state SSL_HANDSHAKE)"
)


def test_the_broker_and_the_reason_are_read_from_librdkafkas_text() -> None:
    assert tls.broker_address(VERIFY_FAILED) == ("127.0.0.1", 9093)
    assert tls.broker_address("sasl_ssl://[::1]:9094/1: SSL handshake failed: x") == ("::1", 9094)
    assert tls.broker_address("1/1 brokers are down") is None
    assert tls.is_certificate_failure(VERIFY_FAILED)
    reason = tls.librdkafka_reason(VERIFY_FAILED)
    assert reason.startswith("SSL handshake failed: error:0A000086")
    assert reason.endswith("(install ca-certificates package)")


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (10, "the certificate of the broker at 127.0.0.1:9093 has expired. Renew it"),
        (9, "is not valid yet. Check the clocks"),
        (19, "is not signed by a CA in ssl.ca.location '/etc/ca.pem' (why). Set ssl.ca.location"),
        (64, "is not issued for '127.0.0.1' (why). Connect with a host name its subjectAltName lists"),
        (50, "is refused (why). Check it against ssl.ca.location '/etc/ca.pem'"),
    ],
)
def test_every_verify_code_says_what_to_do(code: int, says: str) -> None:
    diagnosis = tls.Diagnosis("127.0.0.1:9093", code, "why")
    assert says in tls.advice(diagnosis, {"ssl.ca.location": "/etc/ca.pem"})


def test_a_tls_handshake_error_is_an_authentication_error_hence_a_connection_error() -> None:
    error = TLSHandshakeError("message", "127.0.0.1:9093", "certificate has expired")
    assert isinstance(error, AuthenticationError) and isinstance(error, KafkaConnectionError)
    assert (error.address, error.reason) == ("127.0.0.1:9093", "certificate has expired")


@pytest.fixture
def expired_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server on loopback serving an expired certificate; yields its port and the CA file."""
    authority = make_authority(tmp_path, "ca")
    keystore = make_keystore(authority, tmp_path, "node", expired=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(keystore.path)
    listener = socket.create_server(("127.0.0.1", 0))
    # close() from another thread does not end a blocking accept().
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, authority.path
    stop.set()
    thread.join(5)
    listener.close()


def test_the_diagnosis_hand_shakes_again_and_names_an_expired_certificate(
    expired_server: tuple[int, Path],
) -> None:
    port, ca = expired_server
    text = VERIFY_FAILED.replace("9093", str(port))
    diagnosis = tls.diagnose({"ssl.ca.location": str(ca)}, text)
    assert diagnosis == tls.Diagnosis(f"127.0.0.1:{port}", 10, "certificate has expired")


def test_no_diagnosis_without_a_certificate_failure_or_a_broker() -> None:
    assert tls.diagnose({}, "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: wrong version") is None
    assert tls.diagnose({}, VERIFY_FAILED.replace("9093", "1")) is None  # nothing listens there


def test_a_node_with_tls_keystores_gets_ssl_and_sasl_ssl_listeners(tmp_path: Path) -> None:
    authority = make_authority(tmp_path, "ca")
    node, expired = make_keystore(authority, tmp_path, "node"), make_keystore(authority, tmp_path, "old")
    keystores = localkafka.TlsKeystores(node.path, {"EXPIRED": expired.path})
    assert keystores.listener_names(sasl=True) == ["SSL", "SASL_SSL", "EXPIRED"]
    props = localkafka.KafkaNode(
        1,
        tmp_path / "node-1",
        9092,
        9093,
        9094,
        tls=keystores,
        tls_ports={"SSL": 9095, "SASL_SSL": 9096, "EXPIRED": 9097},
    ).server_properties()
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094,SSL://127.0.0.1:9095,"
        "SASL_SSL://127.0.0.1:9096,EXPIRED://127.0.0.1:9097,CONTROLLER://127.0.0.1:9093"
    )
    assert props["listener.security.protocol.map"].endswith(",SSL:SSL,SASL_SSL:SASL_SSL,EXPIRED:SSL")
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.keystore.location"] == str(node.path)
    assert props["listener.name.expired.ssl.keystore.location"] == str(expired.path)
    assert "ScramLoginModule" in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [({"SSL": "node.pem"}, "extra TLS listener 'SSL'"), ({"lower": "node.pem"}, "upper-case")],
)
def test_tls_keystores_refuse_a_listener_name_kafka_would(
    tmp_path: Path, extra: dict[str, str], says: str
) -> None:
    (tmp_path / "node.pem").write_text("")
    keystores = localkafka.TlsKeystores(tmp_path / "node.pem", {k: tmp_path / v for k, v in extra.items()})
    with pytest.raises(ValueError, match=says):
        keystores.check()
    with pytest.raises(ValueError, match="is not a file"):
        localkafka.TlsKeystores(tmp_path / "missing.pem").check()


def test_a_certificate_failure_reported_as_a_transport_error_is_a_tls_error_not_an_unreachable_kafka() -> (
    None
):
    """librdkafka sometimes reports the refused certificate as a transport error, without "SSL
    handshake failed" (at least 4 of 34 worker starts measured): it must not read as a Kafka not there."""
    errors = ClientErrors({"bootstrap.servers": "127.0.0.1:1"}, "admin client")
    errors(
        KafkaError(
            KafkaError._TRANSPORT,
            "ssl://127.0.0.1:1/bootstrap: error:0A000086:SSL routines::certificate verify failed "
            "(after 13ms in state SSL_HANDSHAKE)",
        )
    )
    errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    with pytest.raises(TLSHandshakeError) as raised:
        errors.check()
    assert str(raised.value).startswith(
        "TLS handshake with Kafka failed at '127.0.0.1:1' (admin client): certificate verify failed: "
        "the broker's certificate could not be verified. Check that ssl.ca.location names"
    )
    assert "librdkafka: error:0A000086:SSL routines::certificate verify failed)." in str(raised.value)
