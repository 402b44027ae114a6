"""A dead letter too large to copy whole still reaches the dead-letter topic."""

from __future__ import annotations

import os
import threading

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from dramatiq_kafka.dead_letters import MAX_KEPT_HEADER_BYTES, DeadLetterWriter
from dramatiq_kafka.producer import KafkaProducer
from tests.helpers import create_topic, read_topic


@pytest.mark.parametrize("oversized", ["value", "headers"])
def test_a_record_over_the_producers_maximum_is_dead_lettered_without_its_large_parts(
    kafka_bootstrap: str, unique_name: str, oversized: str
) -> None:
    source, dlq = unique_name, f"{unique_name}.XQ"
    create_topic(kafka_bootstrap, dlq, 1)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(source, 1, 1, config={"max.message.bytes": "4000000"})])[source].result(10)
    big = [("big", os.urandom(400_000)) for _ in range(4)] if oversized == "headers" else []
    value = os.urandom(2_000_000) if oversized == "value" else b"small"
    writer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 4_000_000})
    writer.produce(source, value, key=b"k", headers=[("kind", b"x"), *big])
    assert writer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_name})
    consumer.assign([TopicPartition(source, 0, 0)])
    [record] = consumer.consume(1, 20)
    consumer.close()
    assert record.error() is None

    producer = KafkaProducer({"bootstrap.servers": kafka_bootstrap})
    written = threading.Event()
    outcomes: list[object] = []
    writer_ = DeadLetterWriter(producer, "group")
    headers = writer_.headers(record, attempts=0, error=None, reason="not a job")

    def done(error: object | None) -> None:
        outcomes.append(error)
        written.set()

    writer_.write(dlq, record, headers, message_id="m1", on_done=done)
    assert written.wait(20), "the dead letter was never written"
    assert outcomes == [None]
    producer.close()

    [letter] = read_topic(kafka_bootstrap, dlq, count=1)
    assert letter.value == b""
    assert letter.key == b"k"
    assert letter.headers["kind"] == b"x"  # small original headers stay
    assert "big" not in letter.headers
    assert letter.headers["error_message"] == b"not a job"
    omitted = letter.headers["dead_letter_omitted"].decode()
    assert omitted.startswith(f"value of {len(value)} bytes")
    assert f"the original stays at {source}/0@0" in omitted
    if oversized == "headers":
        assert f"4 header(s) over {MAX_KEPT_HEADER_BYTES} bytes (big, big, big, big)" in omitted
