"""Fixtures shared by ``tests/`` and ``integration/``: a real Kafka, fresh names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.middleware import CurrentMessage
from hypothesis import settings

from dramatiq_kafka import BOOTSTRAP_SERVERS_ENV, KafkaBroker, QueueConfig, localkafka

# Hypothesis fails an example slower than 200 ms: that measures the machine (2 cores shared
# with Kafka and the workers in CI), not the code.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")

#: Run the suite with another group protocol (``consumer``: KIP-848's, where a process's
#: queues share one Kafka consumer): every KafkaBroker made in the tests, and the workers
#: of ``integration/app.py``, get it unless a test names its own.
GROUP_PROTOCOL = os.environ.get("DRAMATIQ_KAFKA_TEST_GROUP_PROTOCOL")
if GROUP_PROTOCOL:
    _init = KafkaBroker.__init__

    def _with_protocol(self: KafkaBroker, *args: Any, consumer_config: Any = None, **kwargs: Any) -> None:
        _init(
            self,
            *args,
            consumer_config={"group.protocol": GROUP_PROTOCOL, **(consumer_config or {})},
            **kwargs,
        )

    KafkaBroker.__init__ = _with_protocol  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Kafka node for the whole run, or the one named by the environment."""
    given = os.environ.get(BOOTSTRAP_SERVERS_ENV)
    if given:
        yield given
        return
    cluster = localkafka.start_single(tmp_path_factory.mktemp("kafka"))
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic-safe name no other test uses: queues, groups, prefixes."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def broker(kafka_bootstrap: str, unique_name: str) -> Iterator[KafkaBroker]:
    """A broker with its own consumer group, set as Dramatiq's global broker."""
    broker = KafkaBroker(bootstrap_servers=kafka_bootstrap, group_id=f"group-{unique_name}")
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.fixture
def make_broker(kafka_bootstrap: str, unique_name: str) -> Iterator[Callable[..., KafkaBroker]]:
    """``make_broker(**queue)``: a broker whose queue ``unique_name`` has
    ``QueueConfig(**queue)``, with ``CurrentMessage``; closed after the test."""
    brokers: list[KafkaBroker] = []

    def make(**queue: object) -> KafkaBroker:
        broker = KafkaBroker(
            bootstrap_servers=kafka_bootstrap,
            group_id=f"group-{unique_name}",
            queues={unique_name: QueueConfig(**queue)},  # type: ignore[arg-type]
            fail_fast_default=False,
        )
        broker.add_middleware(CurrentMessage())
        dramatiq.set_broker(broker)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def worker(broker: KafkaBroker) -> Iterator[Worker]:
    """An in-process worker with 8 threads; stopped after the test."""
    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()
