"""A message larger than Kafka takes fails at send time, with its size in the error."""

from __future__ import annotations

import os

import dramatiq
import pytest

from dramatiq_kafka import DeliveryError, KafkaBroker, QueueConfig

#: The topic refuses records over 100 kB; the producer allows 1 MB.
TOPIC_MAX = 100_000


@pytest.fixture
def small_topic_broker(kafka_bootstrap: str, unique_name: str) -> KafkaBroker:
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={unique_name: QueueConfig(partitions=1, topic_config={"max.message.bytes": str(TOPIC_MAX)})},
    )
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.mark.parametrize("dispatch_method", ["sync", "async"])
def test_a_message_over_the_producers_maximum_is_refused_at_send(
    small_topic_broker: KafkaBroker, unique_name: str, dispatch_method: str
) -> None:
    actor = dramatiq.actor(lambda data: None, actor_name="big", queue_name=unique_name)
    payload = os.urandom(600_000).hex()  # 1.2 MB of JSON
    with pytest.raises(
        DeliveryError, match=r"more than the producer's message.max.bytes \(1000000\)"
    ) as raised:
        actor.send_with_options(args=(payload,), dispatch_method=dispatch_method)
    assert "the record is 1200" in raised.value.failures[0][1]
    small_topic_broker.flush_producer(10)  # nothing was queued


def test_a_sync_message_over_the_topics_maximum_raises_naming_the_topic_setting(
    small_topic_broker: KafkaBroker, unique_name: str
) -> None:
    actor = dramatiq.actor(lambda data: None, actor_name="big", queue_name=unique_name)
    payload = os.urandom(100_000).hex()  # 200 kB: the producer takes it, the topic does not
    with pytest.raises(
        DeliveryError,
        match=rf"topic '{unique_name}' refused the batch of this \d+-byte record as too large "
        r"\(see the topic's max.message.bytes\): .*MSG_SIZE_TOO_LARGE",
    ):
        actor.send_with_options(args=(payload,), dispatch_method="sync")
    actor.send_with_options(args=("small",), dispatch_method="sync")


def test_an_async_message_over_the_topics_maximum_is_reported_by_flush(
    small_topic_broker: KafkaBroker, unique_name: str
) -> None:
    actor = dramatiq.actor(lambda data: None, actor_name="big", queue_name=unique_name)
    message = actor.send(os.urandom(100_000).hex())
    with pytest.raises(
        DeliveryError,
        match=rf"{message.message_id}: topic .* refused the batch of this \d+-byte record as too large",
    ):
        small_topic_broker.flush_producer(10)


def test_a_2mb_sync_send_says_which_settings_to_raise_and_names_the_message_once(
    small_topic_broker: KafkaBroker, unique_name: str
) -> None:
    actor = dramatiq.actor(lambda data: None, actor_name="big", queue_name=unique_name)
    message = actor.message(os.urandom(1_000_000).hex())  # 2 MB of JSON
    with pytest.raises(DeliveryError) as raised:
        small_topic_broker.enqueue(message.copy(options={"dispatch_method": "sync"}))
    text = str(raised.value)
    assert text.startswith("1 of 1 message(s) not sent:"), text
    assert text.count(message.message_id) == 1, text
    assert "timeout" not in text
    assert "producer_config={'message.max.bytes': ...}" in text
    assert "the topic's max.message.bytes" in text
    assert raised.value.failures == [(message.message_id, raised.value.failures[0][1])]
