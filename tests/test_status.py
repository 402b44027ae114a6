"""Worker status records in the compacted status topic, against a real Kafka."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import orjson
from dramatiq import Worker

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.status import MAX_STATUS_BYTES, bounded, process_key, read_status

from .helpers import wait_for


def test_a_worker_publishes_its_state_and_a_tombstone_at_shutdown(
    kafka_bootstrap: str, unique_name: str
) -> None:
    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        topic_prefix=prefix,
        status_interval=0.5,
        fail_fast_default=False,
    )
    dramatiq.set_broker(broker)
    release = threading.Event()

    @dramatiq.actor(queue_name="work", max_retries=0)
    def slow(secret: str) -> None:
        release.wait(30)

    slow.send("hunter2")
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:

        def running() -> dict[str, Any] | None:
            found = read_status(broker.client_config, prefix).get(process_key())
            return found if found and found["running"] else None

        wait_for(running, timeout=30, interval=0.3)
        status = running()
        assert status is not None
        assert status["pid"] > 0 and status["threads"] == 2 and status["v"] == 1
        queues = {q["queue"]: q for q in status["queues"]}
        assert f"{prefix}work" == queues["work"]["topic"]
        [job] = status["running"]
        assert job["actor"] == "slow" and job["partition"] is not None and job["offset"] == 0
        [partition] = [p for p in queues["work"]["partitions"] if p["partition"] == job["partition"]]
        assert partition["in_flight"] == 1 and partition["fetched"] == 1
        assert b"hunter2" not in orjson.dumps(status)
        release.set()
        broker.join("work", timeout=30_000)

        def done() -> bool:
            found = read_status(broker.client_config, prefix).get(process_key())
            return bool(found and found["counters"]["done"] == 1 and not found["running"])

        wait_for(done, timeout=30, interval=0.3)
    finally:
        release.set()
        worker.stop()
    assert process_key() not in read_status(broker.client_config, prefix)
    broker.close()


def test_a_worker_with_status_off_publishes_nothing(kafka_bootstrap: str, unique_name: str) -> None:
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"{unique_name}.", status_interval=None
    )
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    time.sleep(1)
    worker.stop()
    assert read_status(broker.client_config, f"{unique_name}.") == {}
    broker.close()


def test_a_record_stays_within_its_bound() -> None:
    status = {
        "v": 1,
        "running": [{"actor": "a" * 200, "message_id": str(i)} for i in range(2000)],
        "queues": [
            {
                "queue": f"q{i}",
                "topic": f"q{i}",
                "last_poll": 0.0,
                "partitions": [{"partition": p} for p in range(500)],
            }
            for i in range(20)
        ],
    }
    value = bounded(status)
    assert len(value) <= MAX_STATUS_BYTES
    assert orjson.loads(value)["truncated"] is True
