"""A process whose partitions the group took away must end up a member again.

The frozen-node scenario (``integration/test_fault_frozen_node.py``) found a
consumer that logged its partitions lost and never rejoined.  Here the same
state is made deterministically on a real Kafka: the process's group member
stops polling past ``max.poll.interval.ms`` (librdkafka leaves the group and
reports the partitions lost), and its librdkafka client is then left without
a subscription, so no assignment can ever come.
"""

from __future__ import annotations

import logging
import time

import pytest

from dramatiq_kafka import KafkaBroker, QueueConfig
from dramatiq_kafka.consumer import KafkaConsumer

pytestmark = pytest.mark.slow

SESSION_MS = 6000  # the broker's group.min.session.timeout.ms
#: The consumer's own bound (3 session timeouts), and time to spare.
REJOIN_BOUND = 3 * SESSION_MS / 1000 + 20
GROUP_TIMEOUTS = {"session.timeout.ms": SESSION_MS, "max.poll.interval.ms": SESSION_MS + 1000}


def make_consumer(kafka_bootstrap: str, unique_name: str) -> tuple[KafkaBroker, KafkaConsumer]:
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={unique_name: QueueConfig(partitions=2)},
        consumer_config=GROUP_TIMEOUTS,
    )
    broker.declare_queue(unique_name)
    consumer = broker.consume(unique_name, prefetch=1, timeout=200)
    assert isinstance(consumer, KafkaConsumer)
    deadline = time.monotonic() + 30
    while not consumer.partitions.held and time.monotonic() < deadline:
        next(consumer)
    assert sorted(consumer.partitions.held) == [0, 1]
    return broker, consumer


def lose_partitions(consumer: KafkaConsumer, caplog: pytest.LogCaptureFixture) -> None:
    # The member's thread takes its lock on every turn: held here, it stops polling
    # past max.poll.interval.ms and librdkafka leaves the group.
    caplog.set_level(logging.WARNING, logger="dramatiq_kafka")
    with consumer.member._lock:
        time.sleep((SESSION_MS + 2000) / 1000)
    # The member's thread reports the loss (and may get the partitions back) while
    # this one iterates: the log says it happened.
    deadline = time.monotonic() + 20
    while " lost." not in caplog.text and time.monotonic() < deadline:
        next(consumer)
    assert f"Partitions [0, 1] of {consumer.topic!r} lost." in caplog.text


def test_a_member_that_never_rejoins_after_losing_its_partitions_gets_a_new_client(
    kafka_bootstrap: str,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker, consumer = make_consumer(kafka_bootstrap, unique_name)
    reported_lost = consumer.partitions.lost

    def lost_for_good(partitions: list[int]) -> None:
        # Unsubscribed on the member's next turn, before librdkafka can rejoin
        # (asked after the loss, it sometimes already had): no assignment can come.
        reported_lost(partitions)
        consumer.member._requests.append(lambda client: client.unsubscribe())
        monkeypatch.setattr(consumer.partitions, "lost", reported_lost)

    monkeypatch.setattr(consumer.partitions, "lost", lost_for_good)
    try:
        old = consumer.member._client
        lose_partitions(consumer, caplog)
        started = time.monotonic()
        while not consumer.partitions.held and time.monotonic() - started < REJOIN_BOUND:
            next(consumer)  # never raises: the member replaces its client by itself
        assert sorted(consumer.partitions.held) == [0, 1]
        assert consumer.member._client is not old
        assert time.monotonic() - started >= consumer.member.rejoin_timeout - SESSION_MS / 1000
        assert "has not rejoined its group since: starting a new one." in caplog.text
    finally:
        consumer.close()
        broker.close()


def test_a_member_that_rejoins_after_losing_its_partitions_keeps_its_client(
    kafka_bootstrap: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker, consumer = make_consumer(kafka_bootstrap, unique_name)
    try:
        old = consumer.member._client
        lose_partitions(consumer, caplog)
        deadline = time.monotonic() + consumer.member.rejoin_timeout + 2
        while time.monotonic() < deadline:
            next(consumer)  # librdkafka rejoins by itself here
        assert sorted(consumer.partitions.held) == [0, 1]
        assert consumer.member._client is old
    finally:
        consumer.close()
        broker.close()
