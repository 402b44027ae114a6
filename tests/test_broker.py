"""The broker against a real Kafka node, with an in-process Dramatiq worker."""

from __future__ import annotations

import socket
import threading
import time

import dramatiq
import orjson
import pytest
from confluent_kafka import Producer
from dramatiq import Worker
from dramatiq.errors import QueueNotFound
from dramatiq.middleware import CurrentMessage

import dramatiq_kafka
from dramatiq_kafka import ConfigurationError, KafkaBroker, KafkaConnectionError, QueueConfig
from tests.helpers import (
    closed_port,
    committed_and_end,
    create_topic,
    read_topic,
    record_count,
    run_worker,
    wait_for,
)


def new_broker(bootstrap: str, name: str, **kwargs: object) -> KafkaBroker:
    broker = KafkaBroker(bootstrap_servers=bootstrap, group_id=f"group-{name}", **kwargs)  # type: ignore[arg-type]
    dramatiq.set_broker(broker)
    return broker


def test_jobs_run_once_and_every_offset_is_committed(kafka_bootstrap: str, unique_name: str) -> None:
    broker = new_broker(kafka_bootstrap, unique_name, queues={unique_name: QueueConfig(partitions=12)})
    seen: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def record(i: int) -> None:
        seen.append(i)

    for i in range(300):
        record.send(i)
    run_worker(broker, unique_name, threads=8, timeout=60_000)
    broker.close()

    assert sorted(seen) == list(range(300))
    committed, ends = committed_and_end(kafka_bootstrap, f"group-{unique_name}", unique_name)
    assert len(ends) == 12
    assert committed == ends
    assert sum(ends.values()) == 300


def test_a_job_sees_its_own_partition_and_offset(kafka_bootstrap: str, unique_name: str) -> None:
    broker = new_broker(kafka_bootstrap, unique_name, queues={unique_name: QueueConfig(partitions=3)})
    seen: dict[int, tuple[int, int, int]] = {}

    @dramatiq.actor(queue_name=unique_name)
    def record(i: int) -> None:
        message = dramatiq_kafka.current_message()
        assert message is not None
        seen[i] = (message.partition, message.offset, message.failures)

    for i in range(30):
        record.send(i)
    run_worker(broker, unique_name, threads=4, timeout=60_000)
    broker.close()

    assert dramatiq_kafka.current_message() is None  # outside a job
    assert sorted(seen) == list(range(30))
    positions = [(partition, offset) for partition, offset, _ in seen.values()]
    assert len(set(positions)) == 30  # each job its own record
    _, ends = committed_and_end(kafka_bootstrap, f"group-{unique_name}", unique_name)
    for partition, end in ends.items():
        assert sorted(o for p, o in positions if p == partition) == list(range(end))
    assert {failures for _, _, failures in seen.values()} == {0}


def test_sync_send_returns_after_kafka_has_the_record(broker: KafkaBroker, unique_name: str) -> None:
    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job() -> None: ...

    job.send()
    assert record_count(broker.bootstrap_servers, unique_name) == 1


def test_async_send_is_delivered_by_flush(broker: KafkaBroker, unique_name: str) -> None:
    @dramatiq.actor(queue_name=unique_name)
    def job() -> None: ...

    for _ in range(50):
        job.send()
    broker.flush_producer()
    assert record_count(broker.bootstrap_servers, unique_name) == 50


def test_a_message_option_overrides_the_actor_dispatch_method(broker: KafkaBroker, unique_name: str) -> None:
    @dramatiq.actor(queue_name=unique_name)
    def job() -> None: ...

    job.send_with_options(dispatch_method="sync")
    assert record_count(broker.bootstrap_servers, unique_name) == 1


def test_a_bad_dispatch_method_fails_at_declaration(broker: KafkaBroker, unique_name: str) -> None:
    with pytest.raises(
        ConfigurationError, match=r"actor 'job': dispatch_method='later' is not one of 'async', 'sync'"
    ):

        @dramatiq.actor(queue_name=unique_name, dispatch_method="later")
        def job() -> None: ...

    assert "job" not in broker.actors


def test_sync_send_to_a_refused_address_raises_before_the_timeout(unique_name: str) -> None:
    port = closed_port()
    broker = new_broker(f"127.0.0.1:{port}", unique_name, create_topics=False, sync_timeout=2)

    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job() -> None: ...

    started = time.monotonic()
    # A wrong address is known at once: no need to wait out sync_timeout.
    with pytest.raises(KafkaConnectionError, match=f"not reachable at '127.0.0.1:{port}'"):
        job.send()
    assert time.monotonic() - started < 1
    broker.producer.close(timeout=0)


def test_declaring_actors_touches_no_network(unique_name: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(1.0)
        broker = new_broker(f"127.0.0.1:{listener.getsockname()[1]}", unique_name)

        @dramatiq.actor(queue_name=unique_name)
        def job() -> None: ...

        assert broker.get_declared_queues() == {unique_name}
        assert broker.get_declared_delay_queues() == {f"{unique_name}.DQ"}
        with pytest.raises(TimeoutError):
            listener.accept()


def test_unknown_queues_are_refused(broker: KafkaBroker) -> None:
    with pytest.raises(QueueNotFound):
        broker.consume("never-declared")


def test_topic_prefix_names_the_topic_but_not_the_queue(kafka_bootstrap: str, unique_name: str) -> None:
    broker = new_broker(kafka_bootstrap, unique_name, topic_prefix="prod.")
    broker.add_middleware(CurrentMessage())
    queue_names: list[str] = []

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        queue_names.append(message.queue_name)

    job.send()
    run_worker(broker, unique_name, threads=2, timeout=30_000)
    assert queue_names == [unique_name]
    assert f"prod.{unique_name}" in broker.admin.topic_names()
    assert unique_name not in broker.admin.topic_names()


def test_no_offset_is_committed_past_an_unfinished_job(broker: KafkaBroker, unique_name: str) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=1)
    release = threading.Event()
    done: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        if i == 0:
            release.wait(30)
        done.append(i)

    for i in range(20):
        job.send(i)
    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: len(done) == 19)
        time.sleep(1.5)  # several commit intervals
        committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
        assert committed == {0: 0}, "an offset was committed past the unfinished job at offset 0"
        release.set()
        broker.join(unique_name, timeout=30_000)
    finally:
        release.set()
        worker.stop()
    committed, ends = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == ends == {0: 20}


def test_a_failed_job_is_dead_lettered_with_its_origin(broker: KafkaBroker, unique_name: str) -> None:
    ran: list[int] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=0)
    def fail(i: int) -> None:
        raise ValueError(f"cannot do {i}")

    @dramatiq.actor(queue_name=unique_name)
    def succeed(i: int) -> None:
        ran.append(i)

    message = fail.send(7)
    for i in range(5):
        succeed.send(i)
    worker = Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        with pytest.raises(ValueError, match="cannot do 7"):
            broker.join(unique_name, timeout=30_000, fail_fast=True)
        broker.join(unique_name, timeout=30_000, fail_fast=False)
    finally:
        worker.stop()

    assert sorted(ran) == list(range(5))
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert orjson.loads(dead.value or b"")["message_id"] == message.message_id
    assert dead.headers["dramatiq_actor"] == b"fail"
    assert dead.headers["dramatiq_message_id"] == message.message_id.encode()
    assert dead.headers["source_topic"] == unique_name.encode()
    assert dead.headers["source_consumer_group"] == broker.group_id.encode()
    assert dead.headers["source_attempts"] == b"1"
    assert dead.headers["error_type"] == b"ValueError"
    assert dead.headers["error_message"] == b"cannot do 7"
    assert b"raise ValueError" in dead.headers["error_traceback"]
    committed, ends = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == ends
    assert int(dead.headers["source_offset"]) < ends[int(dead.headers["source_partition"])]


def test_records_that_are_not_jobs_are_dead_lettered_and_the_rest_run(
    broker: KafkaBroker, unique_name: str
) -> None:
    create_topic(broker.bootstrap_servers, unique_name, partitions=1)
    ran: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        ran.append(i)

    job.send_with_options(args=(1,), dispatch_method="sync")
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(unique_name, b"\x00not json", key=b"k1", headers=[("origin", b"other-service")])
    unknown = {"actor_name": "nobody", "message_id": "m-unknown", "args": [], "kwargs": {}, "options": {}}
    producer.produce(unique_name, orjson.dumps(unknown))
    producer.produce(unique_name, b'{"hello": "world"}')

    @dramatiq.actor(queue_name=f"other-{unique_name}")
    def elsewhere() -> None:
        ran.append(-1)

    producer.produce(unique_name, orjson.dumps(elsewhere.message().asdict()))
    producer.flush(10)
    job.send_with_options(args=(2,), dispatch_method="sync")

    run_worker(broker, unique_name, threads=2, timeout=30_000, fail_fast=False)

    assert sorted(ran) == [1, 2]
    dead = sorted(
        read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=4),
        key=lambda r: r.headers["source_offset"],
    )
    assert dead[0].value == b"\x00not json"
    assert dead[0].key == b"k1"
    assert dead[0].headers["origin"] == b"other-service"
    assert dead[0].headers["source_offset"] == b"1"
    assert b"not JSON" in dead[0].headers["error_message"]
    assert dead[1].headers["source_offset"] == b"2"
    assert dead[1].headers["error_type"] == b"ActorNotFound"
    assert dead[2].headers["source_offset"] == b"3"
    assert b"lacks the string field(s) actor_name, message_id" in dead[2].headers["error_message"]
    assert dead[3].headers["source_offset"] == b"4"
    assert f"belongs to queue 'other-{unique_name}'".encode() in dead[3].headers["error_message"]
    committed, ends = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == ends == {0: 6}


def test_acks_from_a_previous_consumer_are_ignored(broker: KafkaBroker, unique_name: str) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=1)

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None: ...

    job.send_with_options(dispatch_method="sync")
    first = broker.consume(unique_name, prefetch=1, timeout=200)
    stale = next(m for m in iter(lambda: next(first), object()) if m is not None)
    first.close()

    second = broker.consume(unique_name, prefetch=1, timeout=200)
    second.ack(stale)  # the first consumer's record: must not count for the second
    again = next(m for m in iter(lambda: next(second), object()) if m is not None)
    assert again.message_id == stale.message_id
    time.sleep(1)
    committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == {0: 0}
    second.ack(again)
    for _ in range(10):
        next(second)
    second.close()
    committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed == {0: 1}


def test_an_idle_consumer_returns_none_within_its_timeout(broker: KafkaBroker, unique_name: str) -> None:
    broker.declare_queue(unique_name)
    consumer = broker.consume(unique_name, prefetch=1, timeout=300)
    try:
        started = time.monotonic()
        assert next(consumer) is None
        assert time.monotonic() - started < 1.0
    finally:
        consumer.close()


def test_flush_drops_pending_records(broker: KafkaBroker, unique_name: str) -> None:
    ran: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None:
        ran.append(1)

    for _ in range(10):
        job.send()
    broker.flush_producer()
    broker.flush_all()
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        broker.join(unique_name, timeout=10_000)
        time.sleep(0.5)
    finally:
        worker.stop()
    assert ran == []
