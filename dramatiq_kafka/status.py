"""Worker status records: what each worker process is doing, in a compacted topic.

Every ``interval`` seconds a worker process publishes one JSON record to
``{prefix}__dramatiq_kafka_status`` (one partition, ``cleanup.policy=compact``),
keyed ``{host}:{pid}``: its versions, threads, queues, and per partition its
positions, in-flight count and why it is paused, its running jobs and its
counters.  A clean shutdown writes a tombstone (the key with no value), so
the topic keeps only live or crashed processes.  The format is in
``docs/wire-format.md``; a record never holds a job's arguments or any
setting, and is at most :data:`MAX_STATUS_BYTES` long.

The consumers' state is read through ``TopicPartitions.snapshot()``, a
read-only view taken under the partitions' lock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from typing import Any

import dramatiq
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from dramatiq.logging import get_logger
from dramatiq.middleware import Middleware

from . import __version__
from .client_log import with_log
from .consumer_settings import process_key
from .events import EVENTS
from .periodic import Periodic
from .topic_partitions import TopicPartitions

#: The status topic's name after the broker's prefix.
STATUS_TOPIC = "__dramatiq_kafka_status"
#: The version of the record's format (``"v"``).
STATUS_VERSION = 1
#: The largest record written: past it, running jobs then partition details are left out.
MAX_STATUS_BYTES = 65_536
#: Running jobs listed at most (the count is always there).
MAX_RUNNING_LISTED = 100


def status_topic(prefix: str) -> str:
    """The status topic of a broker's topic prefix."""
    return f"{prefix}{STATUS_TOPIC}"


def bounded(status: dict[str, Any], limit: int = MAX_STATUS_BYTES) -> bytes:
    """The record's value, cut to ``limit`` bytes: the running jobs go
    first, then the per-partition details (``"truncated": true`` says so)."""
    value = orjson.dumps(status)
    if len(value) <= limit:
        return value
    status = {**status, "truncated": True, "running": []}
    value = orjson.dumps(status)
    if len(value) <= limit:
        return value
    status["queues"] = [
        {"queue": q["queue"], "topic": q["topic"], "partitions": [], "last_poll": q["last_poll"]}
        for q in status["queues"]
    ]
    return orjson.dumps(status)


class WorkerStatus(Middleware):
    """Publishes this worker process's status every ``interval`` seconds.

    :class:`~dramatiq_kafka.KafkaBroker` adds it unless
    ``status_interval=None``.

    Parameters:
      interval(float): Seconds between two records.
    """

    def __init__(self, *, interval: float = 5.0) -> None:
        self.logger = get_logger(__name__, type(self))
        self.interval = interval
        self._lock = threading.Lock()
        self._running: dict[str, tuple[Any, float]] = {}
        self._counts: Counter[str] = Counter()
        self._publisher = Periodic(
            "dramatiq-kafka-status",
            interval,
            self.publish,
            self.logger,
            "Could not publish the worker's status",
        )
        self._producer: Producer | None = None
        self._worker: Any = None
        self._broker: Any = None
        self._topic = ""
        self._started = 0.0

    # -- what the worker does ------------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # On every job's path: the record of a running job is built only when published,
        # and one dict operation needs no lock under the GIL.
        self._running[message.message_id] = (message, time.time())

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self._running.pop(message.message_id, None)
        with self._lock:
            self._counts["failed" if exception is not None else "done"] += 1

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._running.pop(message.message_id, None)

    # -- events (listener of EVENTS) -------------------------------------------------------------------

    def retried(self, queue_name: str) -> None:
        with self._lock:
            self._counts["retried"] += 1

    def dead_lettered(self, queue_name: str, topic: str) -> None:
        with self._lock:
            self._counts["dead_lettered"] += 1

    def delivery_failed(self, topic: str) -> None:
        pass

    def paused(self, queue_name: str, partitions: int) -> None:
        pass

    # -- the record ------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The record this process publishes now (see ``docs/wire-format.md``)."""
        worker = self._worker
        queues = []
        for queue_name, thread in sorted((getattr(worker, "consumers", None) or {}).items()):
            partitions = getattr(getattr(thread, "consumer", None), "partitions", None)
            if isinstance(partitions, TopicPartitions):
                queues.append({"queue": queue_name, **partitions.snapshot()})
        running = [
            _running_job(message, started)
            for message, started in sorted(dict(self._running).values(), key=lambda job: job[1])
        ]
        with self._lock:
            counts = {name: self._counts[name] for name in ("done", "failed", "retried", "dead_lettered")}
        return {
            "v": STATUS_VERSION,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "group": getattr(self._broker, "group_id", None),
            "versions": {"dramatiq": dramatiq.__version__, "dramatiq_kafka": __version__},
            "started_at": self._started,
            "at": time.time(),
            "interval": self.interval,
            "threads": getattr(worker, "worker_threads", None),
            "queues": queues,
            "running_count": len(running),
            "running": running[:MAX_RUNNING_LISTED],
            "counters": counts,
        }

    def publish(self) -> None:
        """Write one status record now."""
        if self._producer is None:
            return
        self._producer.produce(self._topic, bounded(self.status()), process_key().encode())

    # -- worker hooks ----------------------------------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        prefix = getattr(broker, "topic_prefix", None)
        admin = getattr(broker, "admin", None)
        if prefix is None or admin is None:
            return  # not a KafkaBroker
        self._broker, self._worker = broker, worker
        self._topic = status_topic(prefix)
        self._started = time.time()
        try:
            if getattr(broker, "create_topics", True):
                spec = NewTopic(
                    self._topic,
                    num_partitions=1,
                    replication_factor=-1,
                    config={"cleanup.policy": "compact"},
                )
                admin.ensure({self._topic: spec})
        except Exception as e:
            self.logger.warning("Could not create the status topic %r: %s", self._topic, e)
        # The process's own producer: a second one would cost a thread and a connection
        # per broker for a record every few seconds.
        self._producer = broker.producer.producer  # type: ignore[attr-defined]
        EVENTS.subscribe(self)
        self._publisher.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._publisher.stop()
        EVENTS.unsubscribe(self)
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # A tombstone: this process is gone, the compacted topic forgets it.
        producer.produce(self._topic, None, process_key().encode())
        if producer.flush(5):
            self.logger.warning("The status tombstone of %s was not acknowledged.", process_key())


def read_status(config: dict[str, Any], prefix: str, *, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """The latest status record of every process still in the status topic
    (a tombstone removes its process), by key."""
    from confluent_kafka import Consumer, TopicPartition

    topic = status_topic(prefix)
    consumer = Consumer(
        with_log(config, "status reader")
        | {"group.id": "dramatiq-kafka-status-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            deadline = time.monotonic() + timeout
            position = low
            while position < high and time.monotonic() < deadline:
                for record in consumer.consume(500, 0.5):
                    if record.error() is not None:
                        continue
                    position = int(record.offset() or 0) + 1
                    key = (record.key() or b"").decode(errors="replace")
                    value = record.value()
                    if value is None:
                        found.pop(key, None)
                    else:
                        found[key] = orjson.loads(value)
        return found
    finally:
        consumer.close()


def _running_job(message: Any, started_at: float) -> dict[str, Any]:
    return {
        "actor": message.actor_name,
        "message_id": message.message_id,
        "queue": message.queue_name,
        "started_at": started_at,
        "partition": getattr(message, "partition", None),
        "offset": getattr(message, "offset", None),
    }
