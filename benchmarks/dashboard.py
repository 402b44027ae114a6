"""The dashboard's overview of 100 queues x 12 partitions: how long it takes to render.

    .venv/bin/python benchmarks/dashboard.py [--queues 100] [--partitions 12] [--runs 5]

Uses $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS or starts a local Kafka node.  Creates the queues
(each with its delay and dead-letter topics), sends one job to each, then prints side by side
the overview's render time with the batched reading (uncached, then cached) and the time the
same lag takes read topic by topic (two requests per partition, ``TopicAdmin.lag``).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dramatiq_kafka import BOOTSTRAP_SERVERS_ENV, KafkaBroker, QueueConfig, localkafka  # noqa: E402
from dramatiq_kafka.web import make_app  # noqa: E402


def render(app: Any) -> float:
    started = time.perf_counter()
    status: list[str] = []
    body = b"".join(
        app(
            {"PATH_INFO": "/", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()},
            lambda s, h: status.append(s),
        )
    )
    elapsed = time.perf_counter() - started
    assert status[0].startswith("200") and body.count(b"<tr>") > 1, status
    return elapsed


def run(bootstrap: str, queues: int, partitions: int, runs: int) -> None:
    name = uuid.uuid4().hex[:6]
    broker = KafkaBroker(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{name}",
        topic_prefix=f"bench-{name}.",
        default_queue=QueueConfig(partitions=partitions),
        status_interval=None,
    )
    dramatiq.set_broker(broker)
    started = time.monotonic()
    for i in range(queues):
        queue = f"q{i:03d}"
        broker.declare_queue(queue)
        broker.ensure_topics(queue)
        broker.ensure_topics(dramatiq.common.dq_name(queue))
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={}))
    broker.flush_producer()
    print(
        f"{queues} queues x {partitions} partitions created in {time.monotonic() - started:.1f}s", flush=True
    )
    app = make_app(broker, cache_seconds=0)
    render(app)  # metadata and connections warm
    uncached = [render(app) for _ in range(runs)]
    cached_app = make_app(broker, cache_seconds=60)
    render(cached_app)
    cached = [render(cached_app) for _ in range(runs)]
    started = time.perf_counter()
    for queue in sorted(broker.get_declared_queues()):
        for topic in (broker.topic_name(queue), broker.topic_name(dramatiq.common.dq_name(queue))):
            broker.admin.lag(topic)
        broker.admin.lag(broker.dead_letter_topic(queue))
    per_partition = time.perf_counter() - started
    print(f"{'reading':<38} {'median':>8} {'max':>8}")
    print(f"{'overview, batched, uncached':<38} {statistics.median(uncached):>7.3f}s {max(uncached):>7.3f}s")
    print(f"{'overview, batched, cached (2 s)':<38} {statistics.median(cached):>7.3f}s {max(cached):>7.3f}s")
    print(f"{'lag topic by topic (TopicAdmin.lag)':<38} {per_partition:>7.3f}s {per_partition:>7.3f}s")
    broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    given = os.environ.get(BOOTSTRAP_SERVERS_ENV)
    if given:
        run(given, args.queues, args.partitions, args.runs)
        return
    with localkafka.start_single() as cluster:
        run(cluster.bootstrap_servers, args.queues, args.partitions, args.runs)


if __name__ == "__main__":
    main()
