"""Retries by partition pause, and dead letters after the last retry, on a real Kafka."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

import dramatiq
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from dramatiq import Worker
from dramatiq.middleware import CurrentMessage

from dramatiq_kafka import DeadLetter, KafkaBroker
from dramatiq_kafka.wire import encode_message, message_headers
from tests.helpers import committed_and_end, read_topic, record_count, run_worker, wait_for


def test_a_job_that_fails_once_runs_again_as_the_same_record(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, min_backoff=200)
    runs: list[tuple[int, int, int]] = []

    @dramatiq.actor(queue_name=unique_name)
    def flaky() -> None:
        proxy = CurrentMessage.get_current_message()
        runs.append((proxy.offset, proxy.options.get("retries", 0), time.monotonic()))  # type: ignore[union-attr]
        if len(runs) == 1:
            raise RuntimeError("first attempt fails")

    flaky.send()
    run_worker(broker, unique_name)

    assert [(offset, retries) for offset, retries, _ in runs] == [(0, 0), (0, 1)]
    assert runs[1][2] - runs[0][2] >= 0.2
    assert record_count(broker.bootstrap_servers, unique_name) == 1, "retried in place, not re-enqueued"
    assert record_count(broker.bootstrap_servers, f"{unique_name}.DQ") == 0
    committed, ends = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == ends == {0: 1}


def test_a_zero_backoff_retry_runs_again_at_once(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    # The consumer thread used to sit in its 100 ms fetch while the job failed, so that
    # every "retry in 0 ms" waited for the end of that fetch.
    broker = make_broker(partitions=1, min_backoff=0, max_backoff=0)
    starts: list[float] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=10)
    def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 10:
            raise RuntimeError("fails ten times")

    flaky.send()
    run_worker(broker, unique_name)

    assert len(starts) == 11
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    assert gaps[len(gaps) // 2] < 0.05, f"median gap between a failure and its retry {gaps[5]:.3f}s"


@pytest.mark.parametrize(("failing", "max_retries"), [(10, 2), (10, 0), (0, 2), (99, 2)])
def test_an_ordered_partition_retries_then_dead_letters_and_keeps_order(
    make_broker: Callable[..., KafkaBroker], unique_name: str, failing: int, max_retries: int
) -> None:
    broker = make_broker(partitions=1, ordered=True, min_backoff=50, max_backoff=100)
    order: list[int] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=max_retries)
    def job(i: int) -> None:
        order.append(i)
        if i == failing:
            raise ValueError(f"job {i} always fails")

    messages = [job.send(i) for i in range(100)]
    run_worker(broker, unique_name, threads=8)

    runs = Counter(order)
    assert runs[failing] == max_retries + 1
    assert all(runs[i] == 1 for i in range(100) if i != failing)
    assert [i for i in order if i != failing] == [i for i in range(100) if i != failing]
    # Nothing after the failing job started before it was dead-lettered.
    assert order.index(failing + 1 if failing < 99 else failing) >= order.index(failing)
    if failing < 99:
        assert order.index(failing + 1) == failing + max_retries + 1
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.value == encode_message(messages[failing])
    assert orjson.loads(dead.value or b"")["args"] == [failing]
    assert dead.headers["source_offset"] == str(failing).encode()
    assert dead.headers["source_partition"] == b"0"
    assert dead.headers["source_attempts"] == str(max_retries + 1).encode()
    assert dead.headers["error_type"] == b"ValueError"
    committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == {0: 100}


def test_a_job_that_recovers_within_its_retries_is_not_dead_lettered(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, ordered=True, min_backoff=50)
    order: list[int] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=2)
    def job(i: int) -> None:
        order.append(i)
        if i == 10 and order.count(10) == 1:
            raise ValueError("once")

    for i in range(30):
        job.send(i)
    run_worker(broker, unique_name)
    assert Counter(order) == {i: 2 if i == 10 else 1 for i in range(30)}
    assert record_count(broker.bootstrap_servers, f"{unique_name}.XQ") == 0


def test_other_partitions_flow_while_one_waits_with_a_single_thread(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=3, dead_letter=None, min_backoff=60_000)
    done: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(partition: int) -> None:
        if partition == 0:
            raise RuntimeError("partition 0 always fails")
        done.append(partition)

    _send_to_partitions(broker, unique_name, job, {0: 1, 1: 20, 2: 20})
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: len(done) == 40, timeout=30)
        wait_for(
            lambda: (
                committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)[0]
                == {0: 0, 1: 20, 2: 20}
            ),
            timeout=10,
        )
    finally:
        worker.stop()
    assert sorted(done) == [1] * 20 + [2] * 20


def _send_to_partitions(
    broker: KafkaBroker,
    queue: str,
    actor: dramatiq.Actor,
    counts: dict[int, int],  # type: ignore[type-arg]
) -> None:
    broker.ensure_topics(queue)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for partition, count in counts.items():
        for _ in range(count):
            message = actor.message(partition)
            producer.produce(
                broker.topic_name(queue),
                encode_message(message),
                partition=partition,
                headers=message_headers(message),
            )
    producer.flush(10)


def test_backoff_doubles_and_stops_at_the_cap(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(
        partitions=1, dead_letter=DeadLetter(max_retries=5), min_backoff=200, max_backoff=800
    )
    starts: list[float] = []

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None:
        starts.append(time.monotonic())
        raise RuntimeError("always")

    job.send()
    run_worker(broker, unique_name, threads=1)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 5
    # Expected 0.2, 0.4, 0.8, 0.8, 0.8 s: wide enough for a noisy machine,
    # tight enough to fail with no backoff or with a constant one.
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8, 0.8, 0.8], strict=True):
        assert expected <= gap < expected + 0.35, gaps


@pytest.mark.parametrize("independent", [True, False])
def test_rolling_errors_use_up_the_partition_budget_unless_independent(
    make_broker: Callable[..., KafkaBroker], unique_name: str, independent: bool
) -> None:
    broker = make_broker(
        partitions=1,
        ordered=True,
        min_backoff=20,
        dead_letter=DeadLetter(max_retries=2, independent=independent),
    )
    runs: Counter[int] = Counter()

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        runs[i] += 1
        if runs[i] == 1:
            raise RuntimeError(f"first run of {i} fails")

    for i in range(10):
        job.send(i)
    run_worker(broker, unique_name)
    dead = record_count(broker.bootstrap_servers, f"{unique_name}.XQ")
    if independent:
        assert dead == 0
        assert runs == {i: 2 for i in range(10)}
    else:
        # Each job fails once; the partition's budget (2 retries) runs out
        # on every third failure in a row.
        assert dead == 3
        assert sum(runs.values()) == 20 - 3


def test_in_parallel_mode_jobs_that_succeeded_are_not_run_again(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, min_backoff=300)
    runs: Counter[int] = Counter()
    first_failed = threading.Event()

    @dramatiq.actor(queue_name=unique_name, max_retries=3)
    def job(i: int) -> None:
        runs[i] += 1
        if i == 0 and runs[0] == 1:
            time.sleep(0.3)  # let the jobs after it finish first
            first_failed.set()
            raise RuntimeError("fails once")

    for i in range(20):
        job.send(i)
    run_worker(broker, unique_name, threads=8)
    assert first_failed.is_set()
    assert runs == {i: 2 if i == 0 else 1 for i in range(20)}
    committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == {0: 20}


def test_an_unwritable_dead_letter_topic_holds_the_offset_until_it_accepts_the_record(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, dead_letter=DeadLetter(topic=f"{unique_name}.dead", max_retries=0))
    dead_topic = f"{unique_name}.dead"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    # A dead-letter topic that refuses records as large as ours.
    admin.create_topics([NewTopic(dead_topic, 1, 1, config={"max.message.bytes": "64"})])[dead_topic].result(
        10
    )

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None:
        raise RuntimeError("x" * 200)

    job.send()
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        time.sleep(3)
        committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
        assert committed == {0: 0}, "committed before the dead letter was written"
        assert record_count(broker.bootstrap_servers, dead_topic) == 0

        bigger = ConfigEntry("max.message.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, dead_topic, incremental_configs=[bigger])
        admin.incremental_alter_configs([resource])[resource].result(10)
        broker.join(unique_name, timeout=90_000)
    finally:
        worker.stop()
    [dead] = read_topic(broker.bootstrap_servers, dead_topic, count=1)
    assert dead.headers["error_type"] == b"RuntimeError"


def test_jobs_sharing_a_key_never_run_at_once_and_keep_their_order(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1)
    lock = threading.Lock()
    running: Counter[str] = Counter()
    overlap = {"same key": 0, "any": 0}
    order: dict[str, list[int]] = {"a": [], "b": []}

    @dramatiq.actor(queue_name=unique_name)
    def job(key: str, i: int) -> None:
        with lock:
            running[key] += 1
            overlap["same key"] = max(overlap["same key"], running[key])
            overlap["any"] = max(overlap["any"], sum(running.values()))
            order[key].append(i)
        time.sleep(0.05)
        with lock:
            running[key] -= 1

    broker.ensure_topics(unique_name)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(10):
        for key in ("a", "b"):
            message = job.message(key, i)
            producer.produce(
                unique_name, encode_message(message), key=key.encode(), headers=message_headers(message)
            )
    producer.flush(10)
    run_worker(broker, unique_name, threads=8)
    assert overlap == {"same key": 1, "any": 2}
    assert order == {"a": list(range(10)), "b": list(range(10))}


def test_on_retry_exhausted_hears_of_a_dead_lettered_job(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, min_backoff=20)
    heard: list[tuple[dict[str, object], dict[str, object]]] = []

    @dramatiq.actor(queue_name=unique_name)
    def exhausted(message: dict[str, object], retries: dict[str, object]) -> None:
        heard.append((message, retries))

    @dramatiq.actor(queue_name=unique_name, max_retries=1, on_retry_exhausted="exhausted")
    def job() -> None:
        raise RuntimeError("always")

    message = job.send()
    run_worker(broker, unique_name)
    assert [(m["message_id"], r) for m, r in heard] == [
        (message.message_id, {"retries": 1, "max_retries": 1})
    ]
