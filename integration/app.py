"""The application the whole-system tests run under the ``dramatiq`` CLI.

Every execution is appended to a ledger file of its own process, outside
the worker's memory, so that a test can count executions after a
``kill -9``.  Configured through the environment:

  DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS  Kafka
  APP_GROUP, APP_QUEUE              consumer group and queue
  APP_PARTITIONS                    partitions of the queue's topic
  APP_LEDGER                        directory of the ledger files
  APP_CONSUMER_CONFIG               extra librdkafka consumer settings (JSON)
  APP_MIN_BACKOFF                   the queue's first retry wait (ms)
  APP_CLIENT_CONFIG                 librdkafka settings of every client (JSON: SASL...)
  APP_TIME_LIMIT                    the ``chaotic`` actor's time limit (ms)
  APP_SHARE_GROUP                   "1": the queue is consumed through a share group

A ledger line is ``event job_id partition offset unix_time``.
"""

from __future__ import annotations

import json
import os
import time

import dramatiq
from dramatiq.common import current_millis
from dramatiq.middleware import CurrentMessage

from dramatiq_kafka import KafkaBroker, QueueConfig, revoked
from dramatiq_kafka.continuation import Continuation, Step, continuable

QUEUE = os.environ.get("APP_QUEUE", "default")

broker = KafkaBroker(
    group_id=os.environ.get("APP_GROUP", "dramatiq"),
    queues={
        QUEUE: QueueConfig(
            partitions=int(os.environ.get("APP_PARTITIONS", "12")),
            min_backoff=int(os.environ.get("APP_MIN_BACKOFF", "1000")),
            share_group=os.environ.get("APP_SHARE_GROUP") == "1",
        )
    },
    config=json.loads(os.environ.get("APP_CLIENT_CONFIG", "{}")),
    consumer_config={
        # The suite's switch of group protocol (conftest.py), for these worker processes too.
        **(
            {"group.protocol": os.environ["DRAMATIQ_KAFKA_TEST_GROUP_PROTOCOL"]}
            if os.environ.get("DRAMATIQ_KAFKA_TEST_GROUP_PROTOCOL")
            else {}
        ),
        **json.loads(os.environ.get("APP_CONSUMER_CONFIG", "{}")),
    },
)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)

_ledger_fd: int | None = None


def ledger_write(line: str) -> None:
    """Append one line; a single write() survives the process being killed."""
    global _ledger_fd
    if _ledger_fd is None:
        path = os.path.join(os.environ["APP_LEDGER"], f"{os.getpid()}.log")
        _ledger_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_ledger_fd, f"{line} {time.time():.3f}\n".encode())


def where() -> str:
    message = CurrentMessage.get_current_message()
    return f"{message.partition} {message.offset}"  # type: ignore[union-attr]


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def work(job_id: int, seconds: float = 0.0) -> None:
    ledger_write(f"start {job_id} {where()}")
    if seconds:
        time.sleep(seconds)
    ledger_write(f"done {job_id} {where()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def patient(job_id: int, seconds: float) -> None:
    """Works in small steps and stops as soon as its partition is revoked."""
    ledger_write(f"start {job_id} {where()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if revoked():
            ledger_write(f"revoked {job_id} {where()}")
            return
        time.sleep(0.05)
    ledger_write(f"done {job_id} {where()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def timed(job_id: int, due: int) -> None:
    """A delayed job: tells whether it started before it was due (epoch ms: a
    message's ``eta`` is ``current_millis()`` at the send plus the delay)."""
    ledger_write(f"{'early' if current_millis() < due else 'done'} {job_id} {where()}")


@dramatiq.actor(queue_name=QUEUE)
def failing(job_id: int) -> None:
    ledger_write(f"start {job_id} {where()}")
    raise RuntimeError(f"job {job_id} always fails")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
@continuable(resume_delay=int(os.environ.get("APP_RESUME_DELAY", "0")))
def stepped(job: Continuation, job_id: int, items: int, seconds: float) -> None:
    """Three steps; the second works through ``items`` items with a cursor."""
    if job.resumed:
        ledger_write(f"resumed {job_id} {where()}")
    job.step("one", lambda step: ledger_write(f"step1 {job_id} {where()}"))
    job.step("two", work_items, job_id, items, seconds)
    job.step("three", lambda step: ledger_write(f"step3 {job_id} {where()}"))


def work_items(step: Step, job_id: int, items: int, seconds: float) -> None:
    for i in range(step.cursor or 0, items):
        ledger_write(f"item{i} {job_id} {where()}")
        time.sleep(seconds)
        step.advance(i + 1)


#: How many first runs of a ``chaotic`` job fail, by kind; ``always`` never succeeds.
CHAOS_FAILURES = {"ok": 0, "once": 1, "twice": 2, "overrun": 1}


@dramatiq.actor(queue_name=QUEUE, max_retries=3, time_limit=int(os.environ.get("APP_TIME_LIMIT", "1000")))
def chaotic(job_id: int, kind: str) -> None:
    """Fails its first runs (``once``, ``twice``), overruns its time limit on its first run
    (``overrun``), always fails (``always``), or just works (``ok``)."""
    message = CurrentMessage.get_current_message()
    retries = message.options.get("retries", 0)  # type: ignore[union-attr]
    ledger_write(f"start {job_id} {where()}")
    if kind == "always" or (retries < CHAOS_FAILURES[kind] and kind != "overrun"):
        raise RuntimeError(f"job {job_id} ({kind}) fails at attempt {retries + 1}")
    if kind == "overrun" and retries < 1:
        for _ in range(200):  # interruptible: TimeLimitExceeded is raised between bytecodes
            time.sleep(0.05)
    ledger_write(f"done {job_id} {where()}")
