"""Dispatch options, bulk enqueue and partition keys, on a real Kafka."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict

import dramatiq
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from dramatiq_kafka import (
    BufferFull,
    ConfigurationError,
    DeliveryError,
    DeliveryTimeout,
    KafkaBroker,
    QueueConfig,
    send_many,
)
from tests.helpers import closed_port, read_topic, record_count, run_worker


def test_jobs_with_the_same_partition_key_share_a_partition_and_run_in_order_one_at_a_time(
    broker: KafkaBroker, unique_name: str
) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=12)
    lock = threading.Lock()
    running: Counter[str] = Counter()
    most_at_once: Counter[str] = Counter()
    order: dict[str, list[int]] = defaultdict(list)

    @dramatiq.actor(queue_name=unique_name, partition_key=lambda user, i: user)
    def job(user: str, i: int) -> None:
        with lock:
            running[user] += 1
            most_at_once[user] = max(most_at_once[user], running[user])
            order[user].append(i)
        time.sleep(0.01)
        with lock:
            running[user] -= 1

    users = [f"user-{n}" for n in range(6)]
    for i in range(20):
        for user in users:
            job.send(user, i)
    run_worker(broker, unique_name, threads=8)

    assert order == {user: list(range(20)) for user in users}
    assert most_at_once == {user: 1 for user in users}
    records = read_topic(broker.bootstrap_servers, unique_name, count=120)
    partitions_of = defaultdict(set)
    for record in records:
        partitions_of[record.key].add(record.partition)
    assert set(partitions_of) == {user.encode() for user in users}
    assert all(len(partitions) == 1 for partitions in partitions_of.values())


def test_a_queue_level_fixed_key_and_a_message_level_override(broker: KafkaBroker, unique_name: str) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=3, partition_key="tenant-a")

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None: ...

    job.send()
    job.send_with_options(partition_key="tenant-b")
    broker.flush_producer()
    keys = sorted(record.key for record in read_topic(broker.bootstrap_servers, unique_name, count=2))
    assert keys == [b"tenant-a", b"tenant-b"]


def test_send_many_is_async_by_default_and_sync_when_asked(broker: KafkaBroker, unique_name: str) -> None:
    @dramatiq.actor(queue_name=unique_name)
    def add(x: int, y: int) -> None: ...

    @dramatiq.actor(queue_name=unique_name, dispatch_many_method="sync")
    def mul(x: int, y: int) -> None: ...

    sent = send_many(add, [(i, i) for i in range(100)])
    assert len(sent) == 100
    send_many(mul, [{"x": 1, "y": 2}, (3, 4)])  # returns once Kafka has both
    broker.flush_producer()
    assert record_count(broker.bootstrap_servers, unique_name) == 102


def test_sync_bulk_names_each_message_that_was_not_delivered(broker: KafkaBroker, unique_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    topic = NewTopic(unique_name, 1, 1, config={"max.message.bytes": "1000"})
    admin.create_topics([topic])[unique_name].result(10)

    @dramatiq.actor(queue_name=unique_name, dispatch_many_method="sync")
    def job(text: str) -> None: ...

    # Random text: compression cannot bring it under the topic's limit.
    messages = [job.message("small"), job.message(os.urandom(4000).hex()), job.message("small too")]
    with pytest.raises(DeliveryError) as raised:
        broker.enqueue_many(messages)
    failed = {message_id: reason for message_id, reason in raised.value.failures}
    # Kafka judges whole batches: the small ones may share the big one's fate.
    assert messages[1].message_id in failed
    assert all("MSG_SIZE_TOO_LARGE" in reason for reason in failed.values())
    assert all(message_id in str(raised.value) for message_id in failed)
    assert record_count(broker.bootstrap_servers, unique_name) == len(messages) - len(failed)


def test_sync_bulk_to_a_kafka_gone_away_times_out_naming_every_message(
    kafka_bootstrap: str, unique_name: str
) -> None:
    port = closed_port()
    # The admin client reaches Kafka (the first send's check passes), the
    # producer's address refuses: a Kafka that went away after first contact.
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        producer_config={"bootstrap.servers": f"127.0.0.1:{port}"},
        create_topics=False,
        dispatch_many_method="sync",
        sync_timeout=2,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None: ...

    started = time.monotonic()
    with pytest.raises(DeliveryTimeout) as raised:
        messages = [job.message(i) for i in range(3)]
        broker.enqueue_many(messages)
    assert time.monotonic() - started < 4
    assert {message_id for message_id, _ in raised.value.failures} == {m.message_id for m in messages}
    assert f"127.0.0.1:{port}" in str(raised.value)
    broker.producer.close(timeout=0)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"dispatch_many_method": "later"},
            r"actor 'job': dispatch_many_method='later' is not one of 'async', 'sync'",
        ),
        ({"partition_key": 5}, r"actor 'job': partition_key=5 must be a string or a callable"),
        ({"sync_timeout": 0}, r"actor 'job': sync_timeout=0 must be a positive number of seconds"),
    ],
)
def test_bad_values_fail_at_declaration(
    broker: KafkaBroker, unique_name: str, options: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name, **options)
    with pytest.raises(ConfigurationError, match="QueueConfig"):
        QueueConfig(dispatch_method="never")


def test_async_send_never_blocks_it_refuses_when_the_local_queue_is_full(
    kafka_bootstrap: str, unique_name: str
) -> None:
    port = closed_port()
    # Kafka went away after first contact: the producer's address refuses.
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        create_topics=False,
        producer_config={"queue.buffering.max.messages": 10, "bootstrap.servers": f"127.0.0.1:{port}"},
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None: ...

    started = time.monotonic()
    for i in range(10):
        job.send(i)
    with pytest.raises(BufferFull, match="local queue is full"):
        job.send(10)
    assert time.monotonic() - started < 1
    broker.producer.close(timeout=0)
