"""Scenario 10: the consumer's decoder fuzzed with hypothesis-generated records.

Values (bytes, JSON of any shape, messages with fields of any type), headers
and keys go straight to a queue's topic on a real Kafka; the consumer of
``broker.consume`` reads them.  Nothing may come out of the consumer but
jobs: every record it hands out is one it could decode, and every other one
is dead-lettered with its reason.  ``$FUZZ_EXAMPLES`` sets the examples (5 in
``make test``, 50 in ``make faults``); each example is a fresh queue.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import dramatiq
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.partitions import KafkaMessageProxy
from dramatiq_kafka.wire import encode_message
from integration.faults import Count, Result, record
from tests.helpers import read_topic, record_count

pytestmark = [pytest.mark.slow, pytest.mark.faults]

INDEX = "fuzz_index"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 5)
FIELDS = ["queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def valid() -> dict[str, Any]:
    return {
        "queue_name": "ignored",
        "actor_name": "work",
        "args": [1],
        "kwargs": {},
        "options": {},
        "message_id": os.urandom(8).hex(),
        "message_timestamp": 0,
    }


@st.composite
def message_like(draw: st.DrawFn) -> bytes:
    """A message with some fields dropped, replaced by any JSON, or its options mutated."""
    value = valid()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            del value[name]
        else:
            value[name] = draw(json_values)
    if draw(st.booleans()):
        value["options"] = draw(
            st.dictionaries(
                st.sampled_from(["retries", "max_retries", "eta", "retry_when", "on_retry_exhausted", "x"]),
                json_values,
                max_size=3,
            )
        )
    return json.dumps(value).encode()


values = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    message_like(),
    st.just(None),
)
headers = st.lists(st.tuples(st.text(min_size=1, max_size=12), st.binary(max_size=40)), max_size=4)
keys = st.none() | st.binary(max_size=16)
records = st.lists(st.tuples(values, headers, keys), min_size=1, max_size=25)

TOTALS = {"records": 0, "handed_out": 0, "dead_lettered": 0, "examples": 0}
_names = itertools.count()


@pytest.mark.timeout(1800)
def test_fuzzed_records_are_jobs_or_dead_letters_with_a_reason(
    kafka_bootstrap: str, unique_name: str
) -> None:
    check_examples(kafka_bootstrap, unique_name)
    record(
        Result(
            scenario="10-decoder-fuzz",
            title="the decoder fuzzed (hypothesis records: values, headers, keys)",
            fault=f"{TOTALS['records']} generated records in {TOTALS['examples']} examples (values: bytes, "
            "any JSON, messages with fields dropped or of any type, tombstones; any headers and keys)",
            count=Count(
                sent=TOTALS["handed_out"],
                executed=TOTALS["handed_out"],
                lost=[],
                duplicates=0,
            ),
            duplicate_bound=0,
            notes=f"{TOTALS['handed_out']} records decoded and handed out as jobs, "
            f"{TOTALS['dead_lettered']} dead-lettered, each with error_type and error_message; "
            "no exception out of the consumer",
        )
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=records)
def check_examples(kafka_bootstrap: str, unique_name: str, batch: list[tuple[Any, Any, Any]]) -> None:
    queue = f"{unique_name}-{next(_names)}"
    broker = KafkaBroker(bootstrap_servers=kafka_bootstrap, group_id=f"group-{queue}")
    dramatiq.set_broker(broker)
    dramatiq.actor(lambda job_id: None, actor_name="work", queue_name=queue)
    broker.declare_queue(queue)
    consumer = broker.consume(queue, prefetch=8, timeout=100)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    try:
        # One good job first: once it is handed out the consumer is assigned.
        producer.produce(broker.topic_name(queue), encode_message(broker.actors["work"].message(0)))
        for index, (value, hs, key) in enumerate(batch):
            producer.produce(
                broker.topic_name(queue), value, key=key, headers=[*hs, (INDEX, str(index).encode())]
            )
        assert producer.flush(30) == 0
        handed: set[int] = set()
        dead_topic = broker.dead_letter_topic(queue)
        deadline = time.monotonic() + 90
        next_count = 0.0
        while time.monotonic() < deadline:
            message = next(consumer)  # must never raise
            if message is not None:
                assert isinstance(message, KafkaMessageProxy)
                found = [v for k, v in (message.record.headers() or []) if k == INDEX]
                if found:
                    handed.add(int(found[-1]))
                consumer.ack(message)
            if time.monotonic() >= next_count:
                next_count = time.monotonic() + 1
                if len(handed) + record_count(kafka_bootstrap, dead_topic) >= len(batch):
                    break
        dead = read_topic(kafka_bootstrap, dead_topic, count=len(batch) - len(handed), timeout=30)
        by_index = {int(r.headers[INDEX]): r for r in dead if INDEX in r.headers}
        assert set(by_index) == set(range(len(batch))) - handed, (batch, handed, sorted(by_index))
        for letter in by_index.values():
            assert letter.headers["error_type"] and letter.headers["error_message"], letter
        TOTALS["records"] += len(batch)
        TOTALS["handed_out"] += len(handed)
        TOTALS["dead_lettered"] += len(by_index)
        TOTALS["examples"] += 1
    finally:
        consumer.close()
        broker.close()
