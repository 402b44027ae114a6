"""Fixtures that run Dramatiq's own tests on a KafkaBroker, and the lists of expected failures.

Dramatiq's tests ask for ``stub_broker``: here it is a ``KafkaBroker`` on the test run's Kafka
(the session fixture ``kafka_bootstrap`` of the repository's ``conftest.py``), with a consumer
group and a topic prefix of its own per test, so no test sees another's records.  Everything
else is as in Dramatiq's ``tests/conftest.py``: ``stub_worker`` is ``Worker(broker,
worker_timeout=100, worker_threads=32)``.  Result and rate-limit backends are the stub ones:
Redis and memcached backends test those stores, not the broker.

Two reviewed lists beside this file turn test ids into expectations:

- ``cannot_hold.toml``: tests that no Kafka broker can pass (a latency budget only an in-memory
  broker meets, a ``StubBroker`` internal).  They are skipped with their reason.
- ``known_failing.toml``: tests that fail for a reason this project can fix, until the consumer
  rewrite lands.  They are expected to fail (xfail); one that passes is named at the end of
  the run so that it leaves the list.
"""

from __future__ import annotations

import logging
import os
import random
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from dramatiq import Worker
from dramatiq.rate_limits import backends as rate_limit_backends
from dramatiq.rate_limits.backend import RateLimiterBackend
from dramatiq.results import backends as result_backends_module
from dramatiq.results.backend import ResultBackend

from dramatiq_kafka import KafkaBroker

__all__ = [
    "info_logging",
    "pytest_collection_modifyitems",
    "pytest_terminal_summary",
    "rate_limiter_backend",
    "rate_limiter_backends",
    "redis_result_backend",
    "result_backend",
    "result_backends",
    "stub_broker",
    "stub_rate_limiter_backend",
    "stub_result_backend",
    "stub_worker",
    "warm_kafka",
]

HERE = Path(__file__).resolve().parent
CANNOT_HOLD = HERE / "cannot_hold.toml"
KNOWN_FAILING = HERE / "known_failing.toml"
#: A known failure may hang (a job that is never finished keeps ``join`` waiting): bound it.
KNOWN_FAILING_TIMEOUT = 15

# As Dramatiq's conftest does: a fixed seed, INFO logs.
random.seed(1337)


@pytest.fixture(scope="session", autouse=True)
def warm_kafka(kafka_bootstrap: str) -> None:
    """Give the run's new Kafka what every running cluster has: its offsets topic.

    The first consumer group of a cluster makes Kafka create ``__consumer_offsets`` (50
    partitions), which took 3-4 s here: without this, the first of Dramatiq's tests with a
    sub-second budget failed on any run that started with it.
    """
    topic = "suite-warm-up"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1)])[topic].result(30)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic})
    assigned: list[object] = []
    consumer.subscribe([topic], on_assign=lambda _consumer, partitions: assigned.extend(partitions))
    deadline = time.monotonic() + 60
    try:
        while not assigned and time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()


@pytest.fixture
def stub_broker(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[KafkaBroker]:
    """A ``KafkaBroker`` standing where Dramatiq's tests expect their ``StubBroker``."""
    name = f"{request.node.name[:30]}-{uuid.uuid4().hex[:8]}"
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    # The project suite's switch of group protocol (conftest.py) reaches this one too.
    protocol = os.environ.get("DRAMATIQ_KAFKA_TEST_GROUP_PROTOCOL")
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"suite-{name}",
        topic_prefix=f"suite-{name}.",
        consumer_config={"group.protocol": protocol} if protocol else None,
    )
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: KafkaBroker) -> Iterator[Worker]:
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=32)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def info_logging() -> Iterator[None]:
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(logging.DEBUG)


@pytest.fixture
def stub_result_backend() -> ResultBackend:
    return result_backends_module.StubBackend()


@pytest.fixture
def redis_result_backend() -> ResultBackend:
    pytest.skip("Redis result backend: a test of the result store, not of the broker")


@pytest.fixture
def result_backends(stub_result_backend: ResultBackend) -> dict[str, ResultBackend]:
    return {"stub": stub_result_backend}


@pytest.fixture(params=["stub"])
def result_backend(
    request: pytest.FixtureRequest, result_backends: dict[str, ResultBackend]
) -> ResultBackend:
    return result_backends[request.param]


@pytest.fixture
def stub_rate_limiter_backend() -> RateLimiterBackend:
    return rate_limit_backends.StubBackend()


@pytest.fixture
def rate_limiter_backends(stub_rate_limiter_backend: RateLimiterBackend) -> dict[str, RateLimiterBackend]:
    return {"stub": stub_rate_limiter_backend}


@pytest.fixture(params=["stub"])
def rate_limiter_backend(
    request: pytest.FixtureRequest, rate_limiter_backends: dict[str, RateLimiterBackend]
) -> RateLimiterBackend:
    return rate_limiter_backends[request.param]


# -- the lists ---------------------------------------------------------------------------------------


def load_list(path: Path) -> dict[str, str]:
    """``{test id: reason}`` of a list file: ids relative to Dramatiq's ``tests/``."""
    with path.open("rb") as file:
        data = tomllib.load(file)
    ids: dict[str, str] = {}
    for section in data.values():
        for test_id, reason in section.items():
            ids[test_id] = f"{reason}"
    return ids


def short_id(item: pytest.Item) -> str:
    """``test_actors.py::test_x[stub]``: the id below the fetched ``dramatiq_tests/``."""
    return item.nodeid.split("dramatiq_tests/", 1)[-1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cannot_hold = load_list(CANNOT_HOLD)
    known_failing = load_list(KNOWN_FAILING)
    seen = set()
    for item in items:
        test_id = short_id(item)
        seen.add(test_id)
        if test_id in cannot_hold:
            item.add_marker(pytest.mark.skip(reason=f"cannot hold on Kafka: {cannot_hold[test_id]}"))
        elif test_id in known_failing:
            item.add_marker(pytest.mark.timeout(KNOWN_FAILING_TIMEOUT))
            reason = f"known failing: {known_failing[test_id]}"
            item.add_marker(pytest.mark.xfail(reason=reason))
    config.stash[_STALE] = sorted((set(cannot_hold) | set(known_failing)) - seen)


_STALE = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    passing = [short_id(report) for report in terminalreporter.stats.get("xpassed", [])]
    if passing:
        terminalreporter.section("known failures that passed")
        terminalreporter.line(
            f"remove from {KNOWN_FAILING.name} once they pass on every run: " + ", ".join(passing)
        )
    stale = config.stash.get(_STALE, [])
    if stale:
        terminalreporter.section("listed ids this Dramatiq does not have")
        terminalreporter.line(", ".join(stale))
