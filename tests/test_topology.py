"""The topology names a queue's topics and resolves its settings the same way for everyone."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.message import Message

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.topics import QueueTopics
from dramatiq_kafka.topology import Topology


def message(queue_name: str, actor_name: str = "job", **options: object) -> Message[object]:
    return Message(queue_name=queue_name, actor_name=actor_name, args=(), kwargs={}, options=options)


def test_a_queue_and_its_delay_queue_share_topics_and_settings() -> None:
    config = QueueConfig(partitions=3, ordered=True, dead_letter=DeadLetter(topic="failed"))
    topology = Topology(prefix="prod.", queues={"orders": config})

    assert topology.topics("orders") == QueueTopics("prod.orders", "prod.orders.DQ", "prod.failed")
    assert topology.topics("orders.DQ") == topology.topics("orders")
    assert topology.topic_name("orders.DQ") == "prod.orders.DQ"
    assert topology.dead_letter_topic("orders.DQ") == "prod.failed"
    assert topology.queue_config("orders.DQ") is config
    assert topology.queue_config("other") == QueueConfig()
    assert topology.topics("other").dead_letters == "prod.other.XQ"


def test_another_prefix_renames_every_topic_of_a_queue() -> None:
    topology = Topology(
        prefix="prod.", queues={"orders": QueueConfig(dead_letter=DeadLetter(topic="failed"))}
    )

    assert topology.with_prefix("test.").topics("orders") == QueueTopics(
        "test.orders", "test.orders.DQ", "test.failed"
    )
    assert topology.prefix == "prod."


def test_a_queue_without_dead_letters_retries_forever_but_still_names_a_topic_for_poison_records() -> None:
    topology = Topology(queues={"q": QueueConfig(dead_letter=None)})

    assert topology.dead_letter_for("q") is None
    assert topology.retry_policy(message("q")).max_retries is None
    assert topology.dead_letter_topic("q") == "q.XQ"


def test_the_retry_policy_takes_the_queue_then_the_actor_then_the_message() -> None:
    broker = KafkaBroker(
        queues={"q": QueueConfig(min_backoff=100, max_backoff=1000, dead_letter=DeadLetter(max_retries=3))},
    )

    @dramatiq.actor(broker=broker, queue_name="q", max_retries=5, min_backoff=200)
    def job() -> None: ...

    topology = broker.topology
    from_actor = topology.retry_policy(message("q", "job"))
    assert (from_actor.max_retries, from_actor.min_backoff, from_actor.max_backoff) == (5, 200, 1000)
    from_message = topology.retry_policy(message("q.DQ", "job", max_retries=1, max_backoff=500))
    assert (from_message.max_retries, from_message.min_backoff, from_message.max_backoff) == (1, 200, 500)
    from_queue = topology.retry_policy(message("q", "unknown"))
    assert (from_queue.max_retries, from_queue.min_backoff) == (3, 100)


@pytest.mark.parametrize(
    ("queue_name", "actor_name", "options", "reason"),
    [
        ("other", "job", {}, "Actor 'job' belongs to queue 'q', not 'other'."),
        (
            "q",
            "job",
            {"on_retry_exhausted": "gone"},
            "The option on_retry_exhausted names no known actor ('gone').",
        ),
        ("q.DQ", "job", {}, None),
        ("q", "unknown", {}, None),
    ],
)
def test_a_message_is_refused_when_it_is_no_job_of_its_queue(
    queue_name: str, actor_name: str, options: dict[str, object], reason: str | None
) -> None:
    broker = KafkaBroker()

    @dramatiq.actor(broker=broker, queue_name="q")
    def job() -> None: ...

    assert broker.topology.refusal(message(queue_name, actor_name, **options)) == reason
