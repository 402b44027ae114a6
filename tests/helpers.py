"""Reading what Kafka holds, the way a user (or an operator) would see it."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from dramatiq import Worker

from dramatiq_kafka import KafkaBroker


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_topic(bootstrap: str, topic: str, *, count: int, timeout: float = 20.0) -> list[Record]:
    """Read the first ``count`` records of a topic (all partitions), or fail."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.2):
                if m.error() is None:
                    headers = {k: v for k, v in (m.headers() or [])}
                    records.append(Record(m.key(), m.value(), headers, m.partition(), m.offset()))
        assert len(records) >= count, f"expected {count} records in {topic!r}, found {len(records)}"
        return records
    finally:
        consumer.close()


def committed_and_end(
    bootstrap: str, group: str, topic: str, config: dict[str, Any] | None = None
) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and the end offsets of every partition.

    A partition where the group committed nothing counts as committed at 0.
    ``config`` adds client settings (SASL...).
    """
    consumer = Consumer(
        {**(config or {}), "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = {tp.partition: max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10)}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        return committed, ends
    finally:
        consumer.close()


def record_count(bootstrap: str, topic: str) -> int:
    """How many records a topic's partitions hold, in all."""
    _, ends = committed_and_end(bootstrap, "observer", topic)
    return sum(ends.values())


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_worker(
    broker: KafkaBroker,
    queue: str,
    *,
    threads: int = 4,
    timeout: int = 60_000,
    fail_fast: bool | None = None,
    only_this_queue: bool = False,
) -> None:
    """Run an in-process worker until the group committed every record of ``queue``
    (consuming only ``queue`` when ``only_this_queue``)."""
    queues = {queue} if only_this_queue else None
    worker = Worker(broker, worker_threads=threads, worker_timeout=100, queues=queues)
    worker.start()
    try:
        broker.join(queue, timeout=timeout, fail_fast=fail_fast)
    finally:
        worker.stop()


def wait_for(condition: object, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Wait until ``condition()`` is true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def set_group_config(bootstrap: str, group_id: str, settings: dict[str, str]) -> None:
    """Set a (share) group's config, as ``kafka-configs.sh --entity-type groups`` does."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in settings.items()
    ]
    resource = ConfigResource(ResourceType.GROUP, group_id, incremental_configs=entries)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()
