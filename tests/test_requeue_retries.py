"""Non-blocking retries (``retry_mode="requeue"``) on a real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable

import dramatiq
import orjson
import pytest
from dramatiq.middleware import CurrentMessage

from dramatiq_kafka import ConfigurationError, DeadLetter, KafkaBroker, QueueConfig
from tests.helpers import read_topic, run_worker


def test_a_bad_retry_mode_fails_at_declaration() -> None:
    with pytest.raises(
        ConfigurationError, match=r"QueueConfig\(retry_mode='later'\): must be one of 'pause', 'requeue'"
    ):
        QueueConfig(retry_mode="later")


def test_a_job_that_always_fails_does_not_hold_up_its_partition(
    make_broker: Callable[..., KafkaBroker], kafka_bootstrap: str, unique_name: str
) -> None:
    broker = make_broker(
        partitions=1, retry_mode="requeue", min_backoff=1500, dead_letter=DeadLetter(max_retries=2)
    )
    attempts: list[tuple[int, float]] = []
    done: dict[int, float] = {}

    @dramatiq.actor(queue_name=unique_name)
    def poison() -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        attempts.append((message.options.get("retries", 0), time.time()))
        raise RuntimeError("always fails")

    @dramatiq.actor(queue_name=unique_name)
    def good(i: int) -> None:
        done[i] = time.time()

    poison.send()
    for i in range(5):
        good.send(i)
    run_worker(broker, unique_name, threads=2)

    # The jobs behind it ran before its first retry, not after its backoff.
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert [retries for retries, _ in attempts] == [0, 1, 2]
    assert max(done.values()) < attempts[1][1]
    # Backoff doubles: ~1.5 s, then ~3 s.
    assert 1.4 <= attempts[1][1] - attempts[0][1]
    assert 2.9 <= attempts[2][1] - attempts[1][1]
    [dead] = read_topic(kafka_bootstrap, f"{unique_name}.XQ", count=1)
    assert dead.headers["source_attempts"] == b"3"
    assert dead.headers["error_type"] == b"RuntimeError"
    assert dead.headers["source_topic"] == unique_name.encode()
    assert orjson.loads(dead.value or b"")["actor_name"] == "poison"
