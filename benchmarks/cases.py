"""One measurement per process: what ``bench.py`` runs as a child.

    python benchmarks/cases.py '{"case": "enqueue", "system": "kafka-async", ...}'

prints one line of JSON with the figures.  Each measurement gets a fresh
interpreter, so no broker, actor registry or allocator state leaks from one
system into the next.  The ``worker`` case also runs in the virtualenv of
dramatiq-kafka 0.1.9 (``system: legacy``), so it imports nothing of ours at
module level.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq import Worker

#: librdkafka settings of the raw-produce ceiling: the same as our producer's.
RAW_TOPIC_SUFFIX = ".raw"


class Tally:
    """Counts the runs of each job (jobs are numbered 0..jobs-1 by their argument)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.counts = bytearray(jobs)
        self.executed = 0
        self.distinct = 0
        self.first = 0.0
        self.last = 0.0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self, x: int) -> None:
        now = time.time()
        with self.lock:
            if not self.executed:
                self.first = now
            self.executed += 1
            self.last = now
            if 0 <= x < self.jobs:
                if not self.counts[x]:
                    self.distinct += 1
                    if self.distinct == self.jobs:
                        self.done.set()
                self.counts[x] = min(self.counts[x] + 1, 255)

    def wait(self, stall: float) -> None:
        """Until every job ran, or nothing ran for ``stall`` seconds."""
        seen, since = -1, time.monotonic()
        while not self.done.wait(0.05):
            if self.executed != seen:
                seen, since = self.executed, time.monotonic()
            elif time.monotonic() - since > stall:
                return

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "executed": self.executed,
                "distinct": self.distinct,
                "first": self.first,
                "last": self.last,
                "lost": self.counts.count(0),
                "duplicated": sum(c - 1 for c in self.counts if c > 1),
            }


# -- brokers -------------------------------------------------------------------------------------------


def make_broker(spec: dict[str, Any], system: str) -> dramatiq.Broker:
    if system == "stub":
        from dramatiq.brokers.stub import StubBroker

        return StubBroker()
    if system == "redis":
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=spec["redis"])
    if system == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=spec["rabbitmq"])
    if system == "legacy":
        from dramatiq_kafka import KafkaBroker as LegacyBroker  # 0.1.9, in its own virtualenv

        return LegacyBroker(  # type: ignore[no-any-return]
            bootstrap_servers=spec["kafka"], topic=spec["queue"], group_id=f"group-{spec['queue']}"
        )
    from dramatiq_kafka import KafkaBroker, QueueConfig

    broker = KafkaBroker(
        bootstrap_servers=spec["kafka"],
        group_id=f"group-{spec['queue']}",
        queues={spec["queue"]: QueueConfig(partitions=spec.get("partitions", 12))},
        **spec.get("broker_options", {}),
    )
    broker.ensure_topics(spec["queue"])  # topic creation is no part of any rate
    return broker


def drain(broker: dramatiq.Broker) -> None:
    """Wait until what was enqueued is in the broker, where that can be told."""
    flush = getattr(broker, "flush_producer", None)
    if flush is not None:
        flush()


def declare(broker: dramatiq.Broker, queue: str, fn: Callable[[int], None], **options: Any) -> Any:
    dramatiq.set_broker(broker)
    return dramatiq.actor(fn, actor_name=options.pop("actor_name", "noop"), queue_name=queue, **options)


def noop(x: int) -> None:
    pass


# -- cases ---------------------------------------------------------------------------------------------


def case_enqueue(spec: dict[str, Any]) -> dict[str, Any]:
    """Messages per second handed to the broker (and, for Kafka, delivered)."""
    system, jobs, queue = spec["system"], spec["jobs"], spec["queue"]
    if system == "raw":
        return {"rate": raw_produce(spec)}
    broker = make_broker(spec, system.split("-")[0])
    if system == "kafka-sync":
        actor = declare(broker, queue, noop, dispatch_method="sync")
    else:
        actor = declare(broker, queue, noop)
    # Warm the connection and the code paths; not counted.
    for i in range(min(200, jobs)):
        actor.send(i)
    drain(broker)
    started, cpu = time.perf_counter(), time.process_time()
    if system == "kafka-bulk":
        broker.enqueue_many([actor.message(i) for i in range(jobs)])  # type: ignore[attr-defined]
    else:
        for i in range(jobs):
            actor.send(i)
    drain(broker)
    rate = jobs / (time.perf_counter() - started)
    # CPU of the whole process (librdkafka's threads included), per message.
    cpu_us = (time.process_time() - cpu) / jobs * 1e6
    broker.close()
    return {"rate": rate, "cpu_us": cpu_us}


def raw_produce(spec: dict[str, Any]) -> float:
    """confluent-kafka's ``produce`` of the very records our broker writes: the ceiling."""
    from confluent_kafka import Producer

    from dramatiq_kafka.producer import PRODUCER_DEFAULTS
    from dramatiq_kafka.wire import encode_message, message_headers

    broker = make_broker(spec, "kafka")
    actor = declare(broker, spec["queue"], noop)
    topic = broker.topic_name(spec["queue"])  # type: ignore[attr-defined]
    records = []
    for i in range(spec["jobs"]):
        message = actor.message(i)
        records.append((encode_message(message), message_headers(message)))
    producer = Producer({**PRODUCER_DEFAULTS, "bootstrap.servers": spec["kafka"]})
    for value, headers in records[:200]:
        producer.produce(topic, value, headers=headers)
    producer.flush(30)
    started = time.perf_counter()
    for value, headers in records:
        while True:
            try:
                producer.produce(topic, value, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    rate = len(records) / (time.perf_counter() - started)
    broker.close()
    return rate


def case_e2e(spec: dict[str, Any]) -> dict[str, Any]:
    """Enqueue ``jobs`` no-op jobs, then run one worker until all of them ran."""
    system, jobs, queue = spec["system"], spec["jobs"], spec["queue"]
    broker = make_broker(spec, system)
    tally = Tally(jobs)
    actor = declare(broker, queue, tally.run)
    if system == "kafka":
        broker.enqueue_many([actor.message(i) for i in range(jobs)])  # type: ignore[attr-defined]
    else:
        for i in range(jobs):
            actor.send(i)
    drain(broker)
    worker = Worker(broker, worker_threads=spec.get("threads", 8), worker_timeout=100)
    worker.start()
    tally.wait(stall=spec.get("stall", 30.0))
    worker.stop()
    broker.close()
    result = tally.summary()
    span = result["last"] - result["first"]
    result["rate"] = result["distinct"] / span if span > 0 else 0.0
    return result


def case_fill(spec: dict[str, Any]) -> dict[str, Any]:
    """Enqueue ``jobs`` jobs for workers started afterwards (bulk, as fast as we can)."""
    broker = make_broker(spec, "kafka")
    actor = declare(broker, spec["queue"], noop)
    chunk, end = 10_000, spec.get("end", spec["jobs"])
    for start in range(spec.get("start", 0), end, chunk):
        messages = [actor.message(i) for i in range(start, min(start + chunk, end))]
        while True:
            try:
                broker.enqueue_many(messages)  # type: ignore[attr-defined]
                break
            except Exception as e:  # BufferFull: let librdkafka catch up
                if type(e).__name__ != "BufferFull":
                    raise
                broker.flush_producer()  # type: ignore[attr-defined]
    drain(broker)
    broker.close()
    return {"jobs": spec["jobs"]}


def case_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker process until SIGTERM, writing its tally to ``spec["stats"]``.

    The parent reads the file to see progress and sums the tallies of all
    worker processes.
    """
    system = spec["system"]
    broker = make_broker(spec, system)
    tally = Tally(spec["jobs"])
    declare(broker, spec["queue"], tally.run)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = Worker(broker, worker_threads=spec.get("threads", 8), worker_timeout=100)
    worker.start()

    def write(final: bool) -> None:
        summary = tally.summary()
        summary["pid"] = os.getpid()
        if final:
            summary["counts"] = base64.b64encode(bytes(tally.counts)).decode()
        tmp = spec["stats"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f)
        os.replace(tmp, spec["stats"])

    while not stop.wait(0.2):
        write(final=False)
    worker.stop()
    write(final=True)
    if system != "legacy":
        broker.close()
    return {"stopped": True}


def case_latency(spec: dict[str, Any]) -> dict[str, Any]:
    """Send → start latency at a paced rate, worker and sender in one process."""
    system, queue = spec["system"], spec["queue"]
    rate, seconds = spec.get("rate", 500), spec.get("seconds", 10)
    broker = make_broker(spec, system)
    latencies: list[int] = []
    lock = threading.Lock()

    def record(sent_ns: int) -> None:
        elapsed = time.perf_counter_ns() - sent_ns
        with lock:
            latencies.append(elapsed)

    actor = declare(broker, queue, record)
    worker = Worker(broker, worker_threads=spec.get("threads", 8), worker_timeout=100)
    worker.start()
    # Until the worker owns the partitions and its connections are warm.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        actor.send(time.perf_counter_ns())
        time.sleep(0.05)
        with lock:
            if len(latencies) >= 20:
                break

    def paced(count: int) -> None:
        started = time.perf_counter()
        for i in range(count):
            pause = started + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            actor.send(time.perf_counter_ns())

    # The steady state: a Kafka worker's group settles in its first seconds
    # (the delay queue's consumer joins it too), RabbitMQ's and Redis's
    # consumers warm up.  Not counted.
    paced(int(rate * spec.get("warmup", 4.0)))
    time.sleep(0.5)
    with lock:
        latencies.clear()
    count = int(rate * seconds)
    paced(count)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(latencies) >= count:
                break
        time.sleep(0.05)
    worker.stop()
    broker.close()
    values = sorted(latencies)
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "received": 0, "sent": count}

    def pct(p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] / 1e6

    return {
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": values[-1] / 1e6,
        "received": len(values),
        "sent": count,
    }


CASES = {
    "enqueue": case_enqueue,
    "e2e": case_e2e,
    "fill": case_fill,
    "worker": case_worker,
    "latency": case_latency,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = CASES[spec["case"]](spec)
    sys.stdout.write("\nRESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
