"""What a new user sees with a wrong address or a Kafka that went away."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dramatiq
import pytest

from dramatiq_kafka import ConfigurationError, KafkaBroker, KafkaConnectionError, QueueConfig, localkafka
from dramatiq_kafka.client_log import ClientLog

ROOT = Path(__file__).resolve().parent.parent
#: librdkafka's own format, were it to write to stderr: ``%3|1700000000.123|FAIL|rdkafka#producer-1|``.
RAW_LINE = re.compile(r"%\d\|\d+\.\d+\|[A-Z]+\|rdkafka#")


def refused_address() -> str:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("create_topics", [True, False])
def test_a_send_to_a_refused_address_fails_at_once_naming_it(create_topics: bool) -> None:
    address = refused_address()
    broker = KafkaBroker(bootstrap_servers=address, create_topics=create_topics)
    try:
        actor = dramatiq.actor(lambda: None, actor_name="job", broker=broker)
        started = time.monotonic()
        with pytest.raises(KafkaConnectionError) as raised:
            actor.send()
        elapsed = time.monotonic() - started
    finally:
        broker.close()
    print(f"\ncreate_topics={create_topics}: KafkaConnectionError after {elapsed:.3f}s")
    assert f"Kafka is not reachable at {address!r}" in str(raised.value)
    assert "Connection refused" in str(raised.value)
    assert elapsed < 2.0


EXITING_APP = """
import logging, time
import dramatiq
from dramatiq_kafka import KafkaBroker

logging.basicConfig(level=logging.INFO)
# The admin client reaches the session's Kafka (topics are created, the send
# goes through), the producer's address refuses: Kafka "went away".
broker = KafkaBroker(bootstrap_servers={kafka!r}, group_id="exit-test",
                     producer_config={{"bootstrap.servers": {gone!r}}})
job = dramatiq.actor(lambda: None, actor_name="job", queue_name={queue!r}, broker=broker)
job.send()
print("sent", flush=True)
"""


def test_exit_gives_up_on_a_gone_kafka_and_nothing_raw_reaches_stderr(
    kafka_bootstrap: str, unique_name: str
) -> None:
    gone = refused_address()
    script = textwrap.dedent(EXITING_APP.format(kafka=kafka_bootstrap, gone=gone, queue=unique_name))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, env=os.environ
    )
    elapsed = time.monotonic() - started
    print(f"\nexit with 1 undeliverable record took {elapsed:.1f}s")
    assert result.returncode == 0, result.stderr
    assert "sent" in result.stdout
    assert "1 record(s) were not delivered at exit and are lost" in result.stderr
    assert f"Kafka is not reachable at {gone!r}" in result.stderr
    assert not RAW_LINE.search(result.stderr), result.stderr
    # librdkafka's connection failures: logged once, then counted.
    assert result.stderr.count("Connection refused") <= 4, result.stderr
    assert elapsed < 15  # 5 s of grace after all brokers went down, not flush_timeout's 30 s


def test_a_refused_setting_is_named_without_its_value() -> None:
    broker = KafkaBroker(bootstrap_servers=refused_address(), config={"security.protocol": "Hunter2"})
    try:
        actor = dramatiq.actor(lambda: None, actor_name="job", broker=broker)
        with pytest.raises(ConfigurationError) as raised:
            actor.send()
    finally:
        broker.close()
    assert 'Invalid value for configuration property "security.protocol"' in str(raised.value)
    assert "Hunter2" not in str(raised.value)


def test_a_librdkafka_line_never_shows_a_setting_value(caplog: pytest.LogCaptureFixture) -> None:
    log = ClientLog("producer")
    warning = (
        "[thrd:app]: Configuration property `sasl.mechanism` set to `Hunter2-TopSecret` but "
        "`security.protocol` is not configured for SASL"
    )
    with caplog.at_level(logging.INFO, logger="dramatiq_kafka.librdkafka"):
        log.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", warning)
    (record,) = caplog.records
    assert "Hunter2" not in record.getMessage()
    assert "`sasl.mechanism` set to a value but" in record.getMessage()


def test_a_repeated_librdkafka_line_is_logged_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    log = ClientLog("producer", window=0.2)
    line = "[thrd:127.0.0.1:1/bootstrap]: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after %dms)"
    with caplog.at_level(logging.INFO, logger="dramatiq_kafka.librdkafka"):
        for ms in range(200):
            log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", line % (ms % 3))
        log.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-1", "Failed to acquire PID")
        time.sleep(0.25)
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", line % 0)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0][0] == logging.ERROR
    assert messages[0][1].startswith("producer: FAIL [rdkafka#producer-1]")
    assert messages[1][0] == logging.WARNING and "GETPID" in messages[1][1]
    assert "(and 199 more like it in the last 0.2 s)" in messages[2][1]


def test_a_worker_left_without_a_partition_says_so_once(
    kafka_bootstrap: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={unique_name: QueueConfig(partitions=1)},
    )
    dramatiq.set_broker(broker)
    dramatiq.actor(lambda: None, actor_name="noop", queue_name=unique_name)
    first = broker.consume(unique_name, prefetch=1, timeout=100)
    second = broker.consume(unique_name, prefetch=1, timeout=100)
    caplog.set_level(logging.INFO, logger="dramatiq_kafka")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            next(first)
            next(second)
            holding = [bool(c.partitions.held) for c in (first, second)]  # type: ignore[attr-defined]
            if sorted(holding) == [False, True] and "holds no partition" in caplog.text:
                break
        for _ in range(20):  # more rebalance steps, if any
            next(first)
            next(second)
    finally:
        first.close()
        second.close()
        broker.close()
    lines = [r.getMessage() for r in caplog.records if "holds no partition" in r.getMessage()]
    assert lines == [
        f"This worker holds no partition of {unique_name!r}: the group's other members hold them all "
        "(a topic needs as many partitions as the worker processes meant to share it)."
    ]
    assert "Assigned partitions []" not in caplog.text


def test_closing_after_kafka_went_away_logs_what_is_lost_instead_of_raising(
    tmp_path: Path, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker process that sent only async records, its Kafka gone at shutdown: close()
    # raised "Kafka is not reachable ... Check bootstrap_servers" (meant for a wrong address)
    # out of Dramatiq's worker process, a traceback at exit.
    cluster = localkafka.start_single(tmp_path / "kafka")
    try:
        broker = KafkaBroker(bootstrap_servers=cluster.bootstrap_servers, group_id=unique_name)
        job = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name, broker=broker)
        job.send()
        broker.flush_producer()
    finally:
        cluster.stop()
    job.send()
    caplog.set_level(logging.ERROR, logger="dramatiq_kafka")
    started = time.monotonic()
    broker.close()
    elapsed = time.monotonic() - started
    assert "1 record(s) still pending after the timeout" in caplog.text
    assert "Check bootstrap_servers" not in caplog.text
    assert elapsed < 20  # 5 s after every broker went down, not flush_timeout's 30 s
