"""Which retry settings apply: broker, queue, actor, message (no network needed)."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.broker import MessageProxy

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig


@pytest.fixture
def broker() -> KafkaBroker:
    broker = KafkaBroker(
        bootstrap_servers="127.0.0.1:1",
        dead_letter=DeadLetter(max_retries=7),
        queues={
            "zero": QueueConfig(dead_letter=DeadLetter(max_retries=0), min_backoff=5, max_backoff=50),
            "forever": QueueConfig(dead_letter=None),
        },
    )
    dramatiq.set_broker(broker)
    return broker


def policy_of(broker: KafkaBroker, actor: dramatiq.Actor, **options: object):  # type: ignore[no-untyped-def, type-arg]
    return broker.retry_policy(MessageProxy(actor.message_with_options(**options)))


def test_each_level_overrides_only_what_it_sets(broker: KafkaBroker) -> None:
    @dramatiq.actor(queue_name="other")
    def plain() -> None: ...

    @dramatiq.actor(queue_name="zero")
    def in_zero() -> None: ...

    @dramatiq.actor(queue_name="zero", max_retries=2, min_backoff=10)
    def own() -> None: ...

    assert (policy_of(broker, plain).max_retries, policy_of(broker, plain).min_backoff) == (7, 1000)
    assert (policy_of(broker, in_zero).max_retries, policy_of(broker, in_zero).max_backoff) == (0, 50)
    assert (policy_of(broker, own).max_retries, policy_of(broker, own).min_backoff) == (2, 10)
    assert policy_of(broker, own).max_backoff == 50
    assert policy_of(broker, own, max_retries=4).max_retries == 4


def test_none_means_retry_forever(broker: KafkaBroker) -> None:
    @dramatiq.actor(queue_name="forever", max_retries=1)
    def in_forever() -> None: ...

    @dramatiq.actor(queue_name="other", max_retries=None)
    def unbounded() -> None: ...

    assert policy_of(broker, in_forever).max_retries is None
    assert policy_of(broker, unbounded).max_retries is None


def test_a_given_retries_middleware_is_replaced() -> None:
    from dramatiq.middleware import Retries

    from dramatiq_kafka.middleware import PartitionRetries

    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", middleware=[Retries()])
    kinds = [type(m) for m in broker.middleware]
    assert Retries not in kinds
    assert PartitionRetries in kinds
