"""Enqueue rate and end-to-end no-op jobs/s: KafkaBroker beside Dramatiq's StubBroker.

    .venv/bin/python benchmarks/throughput.py [JOBS]

Uses $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS or starts a local Kafka node. One
process, 8 worker threads, a 12-partition topic; the end-to-end time counts
from worker start (group join included) to the last commit.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dramatiq
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from dramatiq_kafka import BOOTSTRAP_SERVERS_ENV, KafkaBroker, QueueConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import localkafka


def measure(broker: dramatiq.Broker, queue: str, jobs: int, drain: Callable[[], None]) -> tuple[float, float]:
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue)
    def noop(x: int) -> None:
        pass

    started = time.perf_counter()
    for i in range(jobs):
        noop.send(i)
    drain()
    enqueue_rate = jobs / (time.perf_counter() - started)

    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    started = time.perf_counter()
    worker.start()
    broker.join(queue, timeout=600_000)
    end_to_end = jobs / (time.perf_counter() - started)
    worker.stop()
    return enqueue_rate, end_to_end


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    cluster = None
    bootstrap = os.environ.get(BOOTSTRAP_SERVERS_ENV)
    if not bootstrap:
        cluster = localkafka.start_single()
        bootstrap = cluster.bootstrap_servers
    try:
        stub = StubBroker()
        stub_rates = measure(stub, "default", jobs, lambda: None)
        # The first round warms up the broker's JIT (a fresh JVM is several
        # times slower); the second is the one reported.
        for _ in range(2):
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            kafka = KafkaBroker(
                bootstrap_servers=bootstrap,
                group_id=f"group-{queue}",
                queues={queue: QueueConfig(partitions=12)},
            )
            kafka.ensure_topics(queue)  # topic creation is not part of the enqueue rate
            kafka_rates = measure(kafka, queue, jobs, kafka.flush_producer)
            kafka.close()
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{jobs} no-op jobs, 1 process x 8 threads, 12 partitions")
    print(f"{'':24}{'StubBroker':>12}{'KafkaBroker':>13}{'ratio':>8}")
    for label, stub_rate, kafka_rate in zip(
        ("enqueue (async) msgs/s", "end-to-end jobs/s"), stub_rates, kafka_rates, strict=True
    ):
        print(f"{label:24}{stub_rate:12.0f}{kafka_rate:13.0f}{kafka_rate / stub_rate:8.2f}")


if __name__ == "__main__":
    main()
