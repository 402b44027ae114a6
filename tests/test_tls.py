"""TLS against a real Kafka: SSL and SASL_SSL listeners with a CA the test makes itself.

One node for the module, with the listeners PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL and EXPIRED
(SSL, serving a certificate that ended yesterday). The client settings used here are the ones
docs/security.md shows.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dramatiq_kafka import AuthenticationError, ConfigurationError, KafkaBroker, TLSHandshakeError, localkafka
from dramatiq_kafka.web import make_app
from tests.certificates import Authority, Keystore, make_authority, make_keystore
from tests.helpers import committed_and_end, run_worker

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).with_name("dramatiq-kafka"))
#: "Fast": well under the 10 s a request waits for an unreachable Kafka (the sends here allow 30).
FAST = 5.0
#: The command's own start (Python, imports) comes on top of FAST.
FAST_COMMAND = 20.0
PASSWORD = "alice-7Hq2-never-shown"


@dataclass
class TlsKafka:
    kafka: localkafka.KafkaCluster
    ca: Authority
    other_ca: Authority
    node: Keystore
    expired: Keystore
    #: A client certificate and key (the key inline in the settings): material that must not leak.
    client: Keystore
    directory: Path

    def config(self, user: str | None = None, *, ca: Path | None = None, listener: str | None = None) -> Any:
        """The broker's settings: bootstrap servers apart, the rest as ``config=``."""
        settings = self.kafka.client_config(user, ca_location=ca or self.ca.path, listener=listener)
        return settings.pop("bootstrap.servers"), settings


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    directory = tmp_path_factory.mktemp("tls")
    ca, other_ca = make_authority(directory, "ca"), make_authority(directory, "other-ca")
    node = make_keystore(ca, directory, "node")
    expired = make_keystore(ca, directory, "expired", expired=True)
    client = make_keystore(ca, directory, "client")
    kafka = localkafka.start_single(
        directory / "kafka",
        sasl_users={"alice": PASSWORD},
        tls=localkafka.TlsKeystores(node.path, {"EXPIRED": expired.path}),
    )
    try:
        yield TlsKafka(kafka, ca, other_ca, node, expired, client, directory)
    finally:
        kafka.stop()


def sync_broker(servers: str, config: dict[str, Any], group: str) -> KafkaBroker:
    # 30 s for every wait: a failure that comes faster comes from the broker's own checks.
    broker = KafkaBroker(
        bootstrap_servers=servers,
        config=config,
        group_id=group,
        dispatch_method="sync",
        sync_timeout=30,
        request_timeout=30,
    )
    dramatiq.set_broker(broker)
    return broker


def close_quietly(broker: KafkaBroker) -> None:
    try:
        broker.close()
    except AuthenticationError:
        pass


def properties(path: Path, settings: dict[str, Any]) -> str:
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return str(path)


# -- the right settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, "alice"], ids=["SSL", "SASL_SSL"])
def test_a_worker_runs_jobs_over_tls(tls: TlsKafka, unique_name: str, user: str | None) -> None:
    servers, config = tls.config(user)
    assert config["security.protocol"] == ("SSL" if user is None else "SASL_SSL")
    group = f"group-{unique_name}"
    broker = sync_broker(servers, config, group)
    ran: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(n: int) -> None:
        ran.append(n)

    try:
        for n in range(20):
            job.send(n)
        run_worker(broker, unique_name, threads=4)
        assert sorted(ran) == list(range(20))
        committed, ends = committed_and_end(servers, group, broker.topic_name(unique_name), config)
        assert committed == ends and sum(ends.values()) == 20
    finally:
        broker.close()


def test_the_command_shows_the_lag_over_ssl(tls: TlsKafka, unique_name: str, tmp_path: Path) -> None:
    servers, config = tls.config()
    broker = sync_broker(servers, config, f"group-{unique_name}")
    job = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
    try:
        for _ in range(3):
            job.send()
    finally:
        broker.close()
    client = properties(tmp_path / "client.properties", {"bootstrap.servers": servers, **config})
    result = subprocess.run(
        [CLI, "lag", unique_name, "-c", client, "--group", f"group-{unique_name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Group 'group-{unique_name}' at '{servers}'"
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [unique_name, "total", "3"] in rows


# -- a certificate this client must refuse -----------------------------------------------------------

REFUSED = {
    # (which CA the client trusts, which listener it connects to) -> what the error must say.
    "wrong CA": (
        "other_ca",
        None,
        "is not signed by a CA in ssl.ca.location",
        "Set ssl.ca.location to the PEM file of the CA that signed the brokers' certificates",
    ),
    "expired": ("ca", "EXPIRED", "has expired", "Renew it (and check this machine's clock)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_certificate_fails_a_send_fast_saying_why(
    tls: TlsKafka, unique_name: str, case: str
) -> None:
    authority, listener, problem, remedy = REFUSED[case]
    servers, config = tls.config(ca=getattr(tls, authority).path, listener=listener)
    broker = sync_broker(servers, config, f"group-{unique_name}")
    job = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
    try:
        started = time.monotonic()
        with pytest.raises(TLSHandshakeError) as raised:
            job.send()
        elapsed = time.monotonic() - started
    finally:
        close_quietly(broker)
    print(f"\nsync send, {case}: {type(raised.value).__name__} after {elapsed:.2f}s: {raised.value}")
    message = str(raised.value)
    assert message.startswith(f"TLS handshake with Kafka failed at '{servers}' (")
    assert "certificate verify failed" in message
    assert problem in message and remedy in message
    assert raised.value.address == servers
    assert elapsed < FAST


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_certificate_fails_the_command_fast_saying_why(
    tls: TlsKafka, tmp_path: Path, case: str
) -> None:
    authority, listener, problem, remedy = REFUSED[case]
    servers, config = tls.config(ca=getattr(tls, authority).path, listener=listener)
    client = properties(tmp_path / "client.properties", {"bootstrap.servers": servers, **config})
    started = time.monotonic()
    result = subprocess.run(
        [CLI, "lag", "-c", client, "--timeout", "60"], capture_output=True, text=True, timeout=90
    )
    elapsed = time.monotonic() - started
    print(f"\ndramatiq-kafka lag, {case}: exit {result.returncode} after {elapsed:.2f}s: {result.stderr}")
    assert result.returncode == 3
    assert result.stdout == ""
    # Before it, librdkafka's own line about the failed handshake (logging's last resort).
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"dramatiq-kafka: error: TLS handshake with Kafka failed at '{servers}'")
    assert "certificate verify failed" in error
    assert problem in error and remedy in error
    assert elapsed < FAST_COMMAND


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_certificate_stops_a_worker_at_boot_saying_why(
    tls: TlsKafka, tmp_path: Path, case: str
) -> None:
    authority, listener, problem, remedy = REFUSED[case]
    servers, config = tls.config(ca=getattr(tls, authority).path, listener=listener)
    started = time.monotonic()
    worker = run_app_worker(servers, config, tmp_path)
    elapsed = time.monotonic() - started
    print(f"\ndramatiq worker, {case}: exit {worker.returncode} after {elapsed:.2f}s")
    assert worker.returncode == 3, worker.stderr
    assert f"TLSHandshakeError: TLS handshake with Kafka failed at '{servers}'" in worker.stderr
    assert problem in worker.stderr and remedy in worker.stderr
    assert elapsed < FAST_COMMAND


def run_app_worker(servers: str, config: dict[str, Any], ledger: Path) -> subprocess.CompletedProcess[str]:
    """``dramatiq integration.app`` with these settings, until it exits."""
    environment = {
        **os.environ,
        "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": servers,
        "APP_CLIENT_CONFIG": json.dumps(config),
        "APP_LEDGER": str(ledger),
    }
    return subprocess.run(
        [sys.executable, "-m", "dramatiq", "integration.app", "--processes", "1", "--threads", "1"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
    )


# -- secrets never leak ------------------------------------------------------------------------------


def secrets_of(tls: TlsKafka) -> list[str]:
    """The password and every base64 line of the private keys (a leak may break lines elsewhere)."""
    lines = [line for keystore in (tls.client, tls.node) for line in keystore.key_body_lines]
    return [PASSWORD, *lines]


def client_key(tls: TlsKafka) -> dict[str, str]:
    """The client's own certificate and key, inline: the node does not ask for them, but the
    client loads them, so every path below has a private key in its settings."""
    certificate = tls.client.path.read_text()[len(tls.client.key_pem) :]
    return {"ssl.key.pem": tls.client.key_pem, "ssl.certificate.pem": certificate}


def java_properties(settings: dict[str, str]) -> dict[str, str]:
    """Values with their line breaks escaped, as a .properties file holds a PEM."""
    return {key: value.replace("\n", "\\n") for key, value in settings.items()}


def get(app: Any, path: str) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    body = b"".join(app(environ, start_response))
    return seen["status"], body.decode()


def run_command(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *argv], capture_output=True, text=True, timeout=90)


def test_no_log_line_error_output_or_page_shows_the_password_or_a_key(
    tls: TlsKafka, unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    wrong_password = {"sasl.password": PASSWORD + "-but-wrong"}
    key = client_key(tls)

    # The right settings: SASL_PLAINTEXT and SASL_SSL (with the client's key), a job each, and
    # the dashboard of the SASL_SSL broker.
    for servers, config in (
        (tls.kafka.sasl_bootstrap_servers, tls.kafka.client_config("alice")),
        tls.config("alice"),
    ):
        config = {**config, **key} if config["security.protocol"] == "SASL_SSL" else config
        config.pop("bootstrap.servers", None)
        broker = sync_broker(servers, config, f"group-{unique_name}-{config['security.protocol']}")
        job = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
        try:
            job.send()
            run_worker(broker, unique_name, threads=1, only_this_queue=True)
            if config["security.protocol"] == "SASL_SSL":
                app = make_app(broker, cache_seconds=0, sample_every=None)
                for path in ("/", f"/queue/{unique_name}", "/workers"):
                    status, page = get(app, path)
                    assert status.startswith("200"), (path, status)
                    # No setting of the broker's at all, not only the secret ones.
                    assert "alice" not in page and str(tls.ca.path) not in page
                    shown.append(page)
        finally:
            broker.close()

    # The error paths of a send: a wrong password (with librdkafka's debug lines on), a wrong
    # CA, a key librdkafka cannot read.
    _, sasl_ssl = tls.config("alice")
    _, other_ca = tls.config(ca=tls.other_ca.path)
    for servers, config, error in (
        (
            tls.kafka.tls_bootstrap_servers("SASL_SSL"),
            {**sasl_ssl, **wrong_password, "debug": "security,conf", "log_level": 7},
            AuthenticationError,
        ),
        (tls.kafka.tls_bootstrap_servers("SSL"), {**other_ca, **key}, TLSHandshakeError),
    ):
        broker = sync_broker(servers, config, f"group-{unique_name}")
        job = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
        try:
            with pytest.raises(error) as raised:
                job.send()
        finally:
            close_quietly(broker)
        shown += [str(raised.value), repr(raised.value)]
    # Its last base64 line cut: the lines before it, still secret, are in the settings.
    lines = key["ssl.key.pem"].splitlines()
    broken_key = {**key, "ssl.key.pem": "\n".join([*lines[:-2], lines[-1]]) + "\n"}
    broker = sync_broker(tls.kafka.tls_bootstrap_servers(), {**other_ca, **broken_key}, "unused")
    job = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
    try:
        with pytest.raises(ConfigurationError) as refused:
            job.send()
    finally:
        close_quietly(broker)
    shown += [str(refused.value), repr(refused.value)]
    assert "ssl.key.pem" in str(refused.value)

    # The command: the right password, a wrong one, a wrong CA (the key inline), a broken key.
    servers, right = tls.config("alice")
    paths = {}
    for name, settings in (
        ("right", right),
        ("wrong-password", {**right, **wrong_password}),
        ("wrong-ca", {**other_ca, **key, "bootstrap.servers": tls.kafka.tls_bootstrap_servers()}),
        ("broken-key", {**other_ca, **broken_key, "bootstrap.servers": tls.kafka.tls_bootstrap_servers()}),
    ):
        paths[name] = properties(
            tmp_path / f"{name}.properties", java_properties({"bootstrap.servers": servers, **settings})
        )
    outcomes = {name: run_command("lag", unique_name, "-c", path) for name, path in paths.items()}
    assert [outcomes[name].returncode for name in paths] == [0, 3, 3, 2], [
        o.stderr for o in outcomes.values()
    ]
    assert "authentication failed" in outcomes["wrong-password"].stderr.lower()
    assert "is not signed by a CA in ssl.ca.location" in outcomes["wrong-ca"].stderr
    shown += [text for outcome in outcomes.values() for text in (outcome.stdout, outcome.stderr)]

    # A worker process with a wrong CA: it exits at boot (code 3), saying why.
    worker = run_app_worker(tls.kafka.tls_bootstrap_servers(), {**other_ca, **key}, tmp_path)
    assert worker.returncode == 3, worker.stderr
    assert "TLSHandshakeError: TLS handshake with Kafka failed" in worker.stderr
    shown += [worker.stdout, worker.stderr, caplog.text]

    # librdkafka's debug lines were on (and say what they make of a secret).
    assert "sasl.password = [redacted]" in caplog.text
    leaks = [(secret, text[:200]) for secret in secrets_of(tls) for text in shown if secret in text]
    assert leaks == []
