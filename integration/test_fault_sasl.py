"""Scenario 6: a broker with a SASL/SCRAM listener, the right and the wrong credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dramatiq_kafka import AuthenticationError, KafkaBroker, localkafka
from integration.conftest import App
from integration.faults import Result, count, record
from integration.workers import ROOT
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

USERS = {"alice": "alice-secret"}
#: "Fast": well under the 10 s the same call waits for an unreachable Kafka.
FAST = 5.0


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster = localkafka.start_single(tmp_path_factory.mktemp("sasl-kafka"), sasl_users=USERS)
    try:
        yield cluster
    finally:
        cluster.stop()


def sasl_config(cluster: Any, user: str = "alice", password: str | None = None) -> dict[str, str]:
    config = (
        cluster.client_config(user)
        if password is None
        else {**cluster.client_config(user), "sasl.password": password}
    )
    config.pop("bootstrap.servers")
    return config


def test_the_right_credentials_run_1000_jobs_exactly_once(
    sasl_kafka: Any, make_app: Callable[..., App]
) -> None:
    app = make_app(12, bootstrap=sasl_kafka.sasl_bootstrap_servers, config=sasl_config(sasl_kafka))
    first, second = app.start_worker(threads=8), app.start_worker(threads=8)
    wait_for(lambda: first.assigned(app.queue) and second.assigned(app.queue), timeout=60)
    app.send(1000, seconds=0.002)
    app.broker.join(app.queue, timeout=120_000)
    assert first.terminate() == 0, first.output()
    assert second.terminate() == 0, second.output()

    counted = count(app.ledger_dir, range(1000))
    record(
        Result(
            scenario="6-sasl",
            title="SASL/SCRAM-SHA-512 listener",
            fault="right credentials: 2 worker processes; wrong credentials: see the other tests of the file",
            count=counted,
            duplicate_bound=0,
            notes="wrong credentials fail the worker (exit code 3) and a sync send with "
            "AuthenticationError within 5 s",
        )
    )
    assert counted.lost == [] and counted.duplicates == 0
    committed, ends = app.committed_and_end()
    assert committed == ends


def test_a_worker_with_wrong_credentials_exits_at_once_saying_authentication_failed(
    sasl_kafka: Any, tmp_path: Path
) -> None:
    config = sasl_config(sasl_kafka, password="wrong")
    env = {
        **os.environ,
        "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": sasl_kafka.sasl_bootstrap_servers,
        "APP_CLIENT_CONFIG": json.dumps(config),
        "APP_LEDGER": str(tmp_path),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "integration.app", "--processes", "1", "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    print(f"\nworker with a wrong password exited after {elapsed:.1f}s")
    assert result.returncode == 3, result.stderr
    assert f"Kafka authentication failed at '{sasl_kafka.sasl_bootstrap_servers}'" in result.stderr
    assert "Authentication failed during authentication due to invalid credentials" in result.stderr
    # The process starts Python and Dramatiq first; the check itself takes about a second.
    assert elapsed < 30


@pytest.mark.parametrize("create_topics", [True, False])
def test_a_sync_send_with_wrong_credentials_fails_fast_saying_authentication_failed(
    sasl_kafka: Any, unique_name: str, create_topics: bool
) -> None:
    broker = KafkaBroker(
        bootstrap_servers=sasl_kafka.sasl_bootstrap_servers,
        config=sasl_config(sasl_kafka, password="wrong"),
        create_topics=create_topics,
        dispatch_method="sync",
        sync_timeout=30,
        request_timeout=30,
    )
    dramatiq.set_broker(broker)
    actor = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
    try:
        started = time.monotonic()
        with pytest.raises(
            AuthenticationError, match=r"Kafka authentication failed at .*invalid credentials"
        ):
            actor.send()
        elapsed = time.monotonic() - started
        print(
            f"\nsync send with a wrong password failed after {elapsed:.1f}s (create_topics={create_topics})"
        )
        assert elapsed < FAST
    finally:
        try:
            broker.close()
        except AuthenticationError:
            pass


#: A password no message would contain by chance.
LEAKY = "pw-9f3Kq-never-shown"


def test_no_log_line_or_error_shows_the_password(
    sasl_kafka: Any, unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The wrong-credential paths of the worker and of a send, with a password that must not leak."""
    config = sasl_config(sasl_kafka, password=LEAKY)
    env = {
        **os.environ,
        "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": sasl_kafka.sasl_bootstrap_servers,
        "APP_CLIENT_CONFIG": json.dumps(config),
        "APP_LEDGER": str(tmp_path),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "dramatiq", "integration.app", "--processes", "1", "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 3, worker.stderr
    broker = KafkaBroker(
        bootstrap_servers=sasl_kafka.sasl_bootstrap_servers,
        config=config,
        dispatch_method="sync",
        sync_timeout=30,
    )
    dramatiq.set_broker(broker)
    actor = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name)
    caplog.set_level("DEBUG")
    try:
        with pytest.raises(AuthenticationError) as raised:
            actor.send()
    finally:
        try:
            broker.close()
        except AuthenticationError:
            pass
    shown = [worker.stdout, worker.stderr, str(raised.value), repr(raised.value), caplog.text]
    assert all(LEAKY not in text for text in shown)
    assert "authentication failed" in worker.stderr.lower()
