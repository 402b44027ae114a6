"""Testing actors against a real Kafka: ``pytest`` in this directory."""

from __future__ import annotations

import uuid

import dramatiq
import pytest
import tasks

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.testing import drain


def test_counts_words() -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    tasks.count_words.send(first, "the quick brown fox")
    tasks.count_words.send(second, "jumps")
    drain(tasks.broker, "words")  # a worker runs until the queue is done
    assert tasks.COUNTS[first] == 4
    assert tasks.COUNTS[second] == 1


def test_a_failing_job_fails_the_test() -> None:
    tasks.count_words.send("empty", "   ")
    with pytest.raises(ValueError, match="'empty' is empty"):
        drain(tasks.broker, "words")  # the job's own error, once it is dead-lettered


def test_an_actor_of_the_test(kafka_broker: KafkaBroker) -> None:
    # kafka_broker: topics and a group of this test only, set as the global broker.
    seen = []

    @dramatiq.actor(queue_name="inline")
    def remember(value: int) -> None:
        seen.append(value)

    for value in range(3):
        remember.send(value)
    drain(kafka_broker, "inline")
    assert sorted(seen) == [0, 1, 2]
