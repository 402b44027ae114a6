"""Testing your actors against a real Kafka with pytest.

Load it as a plugin in your ``conftest.py``::

    pytest_plugins = ["dramatiq_kafka.testing"]

and every test session has a Kafka: the one named by
``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` (a CI service, a shared cluster), or
else a single local node started before your modules are imported and
stopped at the end.  The variable is set for the session either way, so a
``KafkaBroker()`` created at import time, and any ``dramatiq`` worker
subprocess, find it.

The local node comes from :mod:`dramatiq_kafka.localkafka`, which ships with
the package: it needs Java 17+ (``$JAVA_HOME`` or ``java`` on the ``PATH``)
and, the first time only, Maven, which fetches Kafka's jars from Maven Central
into ``~/.cache/dramatiq-kafka``.  When one is missing the session stops with
a message naming it.

Fixtures: ``kafka_bootstrap_servers`` (session), ``kafka_broker`` (a broker
of its own per test).  Helpers: :func:`drain` runs a worker until queues are
done; :func:`running_worker` keeps one running around a block.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.common import q_name

from . import localkafka
from .broker import BOOTSTRAP_SERVERS_ENV, KafkaBroker


@contextlib.contextmanager
def local_kafka(workdir: Path | None = None) -> Iterator[str]:
    """The bootstrap servers of ``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS``, or of
    a single local node started for the ``with`` block (and stopped after).

    Raises:
      pytest.UsageError: When there is no Kafka and Java or Maven is missing to
        start one (the message names what is missing).
    """
    given = os.environ.get(BOOTSTRAP_SERVERS_ENV)
    if given:
        yield given
        return
    try:
        localkafka.check_tools()
    except localkafka.LocalKafkaError as e:
        raise pytest.UsageError(
            f"No Kafka for the tests: set ${BOOTSTRAP_SERVERS_ENV} to a Kafka (host:port), or make a "
            f"local node possible ({e})."
        ) from None
    with contextlib.ExitStack() as stack:
        directory = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kafka-")))
        cluster = stack.enter_context(localkafka.start_single(directory))
        os.environ[BOOTSTRAP_SERVERS_ENV] = cluster.bootstrap_servers
        try:
            yield str(cluster.bootstrap_servers)
        finally:
            os.environ.pop(BOOTSTRAP_SERVERS_ENV, None)


_session: contextlib.ExitStack | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Make sure of a Kafka before the test modules (and the brokers they
    create at import) are loaded."""
    global _session
    _session = contextlib.ExitStack()
    _session.enter_context(local_kafka())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _session
    if _session is not None:
        # Close the app's broker while its Kafka is still there to say goodbye to.
        if isinstance(dramatiq.broker.global_broker, KafkaBroker):
            dramatiq.broker.global_broker.close()
        _session.close()
        _session = None


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> Iterator[str]:
    """The Kafka of the session (``host:port``)."""
    with local_kafka() as servers:
        yield servers


@pytest.fixture
def kafka_broker(kafka_bootstrap_servers: str) -> Iterator[KafkaBroker]:
    """A ``KafkaBroker`` with a topic prefix and consumer group no other test
    uses, set as Dramatiq's global broker: actors declared in the test go
    to it, and see no records of other tests."""
    name = uuid.uuid4().hex[:10]
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap_servers, group_id=f"test-{name}", topic_prefix=f"test-{name}."
    )
    previous = dramatiq.get_broker() if dramatiq.broker.global_broker is not None else None
    dramatiq.set_broker(broker)
    try:
        yield broker
    finally:
        broker.close()
        if previous is not None:
            dramatiq.set_broker(previous)


@contextlib.contextmanager
def running_worker(broker: dramatiq.Broker, *, threads: int = 4, **options: Any) -> Iterator[Worker]:
    """An in-process worker for the ``with`` block, stopped after it.

    Parameters:
      broker: The broker whose queues the worker consumes.
      threads(int): Worker threads.
      options: More arguments of ``dramatiq.Worker``.
    """
    worker = Worker(broker, worker_threads=threads, worker_timeout=100, **options)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def drain(
    broker: KafkaBroker,
    *queue_names: str,
    threads: int = 4,
    timeout: int = 60_000,
    fail_fast: bool | None = None,
) -> None:
    """Run an in-process worker until the workers' group has committed every
    record of the queues (all declared queues when none is named, but those
    consumed through a share group), then stop it.

    Parameters:
      broker(KafkaBroker): The broker of the actors under test.
      queue_names(str): The queues to wait for.
      threads(int): Worker threads.
      timeout(int): The most milliseconds to wait for each queue.
      fail_fast(bool): Raise the error of the first job that was
        dead-lettered (default: the broker's ``fail_fast_default``, true).

    Raises:
      QueueJoinTimeout: When a queue is not done in time.
      Exception: With ``fail_fast``, the error of a job that failed for good.
    """
    # A share queue's progress cannot be read (broker.join refuses it): unless named, left out.
    names = queue_names or tuple(
        sorted(q for q in broker.get_declared_queues() if broker.share_group_of(q) is None)
    )
    for queue_name in names:
        # Failures seen by an earlier drain are that test's business.
        broker.failures_by_queue.pop(q_name(queue_name), None)
    with running_worker(broker, threads=threads):
        for queue_name in names:
            broker.join(queue_name, timeout=timeout, fail_fast=fail_fast)
