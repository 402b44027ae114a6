"""The partition state machine as a user sees it on a real Kafka: every job ends, every offset
gets committed, whatever fails at the same time (the defects of the state-machine issue)."""

from __future__ import annotations

import base64
import gc
import logging
import os
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from confluent_kafka import Consumer, Producer
from dramatiq import Worker
from dramatiq.middleware import CurrentMessage, Shutdown

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.wire import encode_message, message_headers
from tests.helpers import committed_and_end, read_topic, record_count, run_worker, wait_for


@pytest.fixture
def two_queue_broker(kafka_bootstrap: str, unique_name: str) -> Iterator[Callable[..., KafkaBroker]]:
    """A broker with the test's queue and a ``-side`` queue whose topic refuses records
    over 2,000 bytes: a follow-up send to it fails after the job returned."""
    brokers: list[KafkaBroker] = []

    def make(**queue: object) -> KafkaBroker:
        broker = KafkaBroker(
            bootstrap_servers=kafka_bootstrap,
            group_id=f"group-{unique_name}",
            fail_fast_default=False,
            queues={
                unique_name: QueueConfig(**queue),  # type: ignore[arg-type]
                f"{unique_name}-side": QueueConfig(partitions=1, topic_config={"max.message.bytes": "2000"}),
            },
        )
        dramatiq.set_broker(broker)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


def _committed_is_end(broker: KafkaBroker, queue: str) -> bool:
    committed, ends = committed_and_end(broker.bootstrap_servers, broker.group_id, queue)
    return committed == ends


def test_many_jobs_of_one_partition_failing_at_once_each_get_their_own_retry(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    # Defects 1 and 5: the second failure overwrote the first one's retry (the job was never
    # run again, the partition committed nothing more and leaked a prefetch slot), and the
    # partition's shared count of failures in a row dead-lettered jobs that had failed once.
    broker = make_broker(
        partitions=1, min_backoff=100, max_backoff=400, dead_letter=DeadLetter(max_retries=3)
    )
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        with lock:
            runs[i] += 1
            first = runs[i] == 1
        time.sleep(0.05)
        if first:
            raise RuntimeError(f"job {i} fails its first run")

    for i in range(24):
        job.send(i)
    run_worker(broker, unique_name, threads=8, timeout=60_000)
    assert runs == {i: 2 for i in range(24)}
    assert record_count(broker.bootstrap_servers, f"{unique_name}.XQ") == 0
    assert _committed_is_end(broker, unique_name)


def test_a_job_over_its_time_limit_is_retried_then_dead_lettered_and_the_partition_goes_on(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    # Defect 3: TimeLimitExceeded is a BaseException; the job was neither retried nor
    # dead-lettered and its partition's commits stopped for good.
    broker = make_broker(partitions=1, ordered=True, min_backoff=50, max_backoff=100)
    runs: Counter[int] = Counter()

    @dramatiq.actor(queue_name=unique_name, time_limit=300, max_retries=1)
    def job(i: int) -> None:
        runs[i] += 1
        if i == 0:
            for _ in range(100):  # interruptible: the limit is raised between bytecodes
                time.sleep(0.02)

    for i in range(5):
        job.send(i)
    broker.emit_after("process_boot")  # what the dramatiq command does: TimeLimit starts its timer
    run_worker(broker, unique_name, threads=2)
    assert runs == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1}
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["error_type"] == b"TimeLimitExceeded"
    assert dead.headers["source_attempts"] == b"2"
    assert _committed_is_end(broker, unique_name)


def test_system_exit_runs_the_job_again_in_place_without_spending_its_budget(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, min_backoff=100, dead_letter=DeadLetter(max_retries=0))
    runs: Counter[int] = Counter()

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        runs[i] += 1
        if i == 0 and runs[0] <= 2:
            raise SystemExit(3)

    job.send(0)
    job.send(1)
    run_worker(broker, unique_name, threads=2)
    # max_retries=0, yet the job ran three times: interpreter exits spend no budget,
    # and it was never dead-lettered.
    assert runs == {0: 3, 1: 1}
    assert record_count(broker.bootstrap_servers, f"{unique_name}.XQ") == 0
    assert _committed_is_end(broker, unique_name)


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "parallel"])
def test_a_job_whose_follow_up_send_is_refused_is_retried_then_dead_lettered(
    two_queue_broker: Callable[..., KafkaBroker], unique_name: str, ordered: bool
) -> None:
    # Defect 3: the job was "cut short (unacknowledged sends)" and its partition froze.
    broker = two_queue_broker(partitions=1, ordered=ordered, min_backoff=50, max_backoff=100)
    runs: Counter[int] = Counter()

    @dramatiq.actor(queue_name=f"{unique_name}-side")
    def follow_up(blob: str) -> None:
        pass

    @dramatiq.actor(queue_name=unique_name, max_retries=2)
    def job(i: int) -> None:
        runs[i] += 1
        if i == 0:  # Kafka refuses this record after the job returned
            follow_up.send(base64.b64encode(os.urandom(6000)).decode())

    for i in range(5):
        job.send(i)
    run_worker(broker, unique_name, threads=2, only_this_queue=True)
    assert runs == {0: 3, 1: 1, 2: 1, 3: 1, 4: 1}
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["error_type"] == b"DeliveryError"
    assert _committed_is_end(broker, unique_name)


def test_an_on_retry_exhausted_send_that_raises_still_dead_letters_the_job(
    two_queue_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    # Defect 4: the hook's send raised inside the ack; the job was never finished.
    broker = two_queue_broker(partitions=1, ordered=True)
    runs: Counter[int] = Counter()
    blob = base64.b64encode(os.urandom(3000)).decode()

    @dramatiq.actor(queue_name=f"{unique_name}-side", dispatch_method="sync")
    def exhausted(message: object, retries: object) -> None:
        pass

    @dramatiq.actor(queue_name=unique_name, max_retries=0, on_retry_exhausted="exhausted")
    def job(i: int, blob: str) -> None:
        runs[i] += 1
        if i == 0:
            raise RuntimeError("fails for good")

    for i in range(4):
        job.send(i, blob)
    run_worker(broker, unique_name, threads=2, only_this_queue=True)
    assert runs == {0: 1, 1: 1, 2: 1, 3: 1}
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["error_type"] == b"RuntimeError"
    assert _committed_is_end(broker, unique_name)


def test_a_retry_when_that_raises_dead_letters_the_job_with_the_hooks_error(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, min_backoff=50)
    seen: list[int] = []

    def retry_when(retries: int, error: BaseException) -> bool:
        seen.append(retries)
        if retries >= 1:
            raise LookupError("retry_when broke")
        return True

    @dramatiq.actor(queue_name=unique_name, retry_when=retry_when)
    def job() -> None:
        raise RuntimeError("always")

    job.send()
    job.send()
    run_worker(broker, unique_name)
    # Each job's own retry count, never the partition's.
    assert seen == [0, 0, 1, 1]
    dead = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=2)
    assert [d.headers["error_type"] for d in dead] == [b"RuntimeError", b"RuntimeError"]
    assert all(b"retry_when broke" in d.headers["error_message"] for d in dead)
    assert _committed_is_end(broker, unique_name)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_partition_paused_for_a_retry_flows_again_after_a_member_joins_and_leaves(
    kafka_bootstrap: str, unique_name: str, protocol: str
) -> None:
    # Defect 2: librdkafka keeps its pause flag across revoke and re-assign; the partition
    # came back paused and was never fetched again.
    group = f"group-{unique_name}"
    consumer_config = {} if protocol == "classic" else {"group.protocol": "consumer"}
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        consumer_config=consumer_config,
        queues={unique_name: QueueConfig(partitions=2, min_backoff=4000)},
        fail_fast_default=False,
    )
    dramatiq.set_broker(broker)
    runs: Counter[str] = Counter()

    @dramatiq.actor(queue_name=unique_name, max_retries=10)
    def job(tag: str) -> None:
        runs[tag] += 1
        if tag.startswith("fail") and runs[tag] == 1:
            raise RuntimeError(f"{tag} fails its first run")

    broker.ensure_topics(unique_name)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def put(tag: str, partition: int) -> None:
        message = job.message(tag)
        producer.produce(
            unique_name, encode_message(message), headers=message_headers(message), partition=partition
        )

    put("fail-0", 0)
    put("fail-1", 1)
    producer.flush(10)
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: runs["fail-0"] == runs["fail-1"] == 1)
        # Another member joins while both partitions wait out their backoff, and leaves.
        other_config = {"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False}
        if protocol == "classic":
            other_config |= {
                "partition.assignment.strategy": "cooperative-sticky",
                "heartbeat.interval.ms": 1000,
            }
        else:
            other_config |= {"group.protocol": "consumer"}
        other = Consumer(other_config)
        other.subscribe([unique_name])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not other.assignment():
            other.poll(0.1)
        assert other.assignment(), "the second member got no partition"
        other.pause(other.assignment())  # it processes nothing
        for _ in range(10):
            other.poll(0.1)
        other.close()
        for i in range(3):
            put(f"new-0-{i}", 0)
            put(f"new-1-{i}", 1)
        producer.flush(10)
        broker.join(unique_name, timeout=60_000)
    finally:
        worker.stop()
        broker.close()
    assert runs == {"fail-0": 2, "fail-1": 2} | {f"new-{p}-{i}": 1 for p in (0, 1) for i in range(3)}


def test_the_next_owner_of_a_partition_waiting_for_a_retry_repeats_nothing_and_keeps_the_count(
    make_broker: Callable[..., KafkaBroker], unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the soak (scenario 12): a worker leaving while a job of its partition waited for
    # its retry left the jobs finished behind it to run again on the next owner, and the
    # waiting job started its retries over (4 more runs where max_retries allowed 2).
    first = make_broker(partitions=1, min_backoff=5000, max_backoff=5000)
    runs: Counter[str] = Counter()
    retries_seen: list[int] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=2)
    def job(tag: str) -> None:
        runs[tag] += 1
        if tag == "fail":
            message = CurrentMessage.get_current_message()
            retries_seen.append(message.options.get("retries", 0) if message else -1)
            time.sleep(0.5)  # the jobs behind it start meanwhile
            raise RuntimeError("fails every time")

    for tag in ("fail", "ok-1", "ok-2", "ok-3"):
        job.send(tag)
    worker = Worker(first, worker_threads=4, worker_timeout=100)
    worker.start()
    wait_for(lambda: runs["fail"] == 1 and all(runs[f"ok-{i}"] for i in (1, 2, 3)))
    time.sleep(0.3)  # fail's failure settles: it waits 5 s for its retry
    worker.stop()  # the partition leaves with the waiting job

    second = make_broker(partitions=1, min_backoff=50, max_backoff=50)
    second.declare_actor(job)
    run_worker(second, unique_name, threads=4)
    assert runs == {"fail": 3, "ok-1": 1, "ok-2": 1, "ok-3": 1}
    assert retries_seen == [0, 1, 2]
    retried = [r.getMessage() for r in caplog.records if "runs it again" in r.getMessage()]
    assert [re.findall(r"\(attempt (\d+)\)", line) for line in retried] == [["2"], ["3"]]
    [dead] = read_topic(second.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["source_attempts"] == b"3"
    assert _committed_is_end(second, unique_name)


def test_a_retry_is_not_changed_by_the_worker_thread_that_ran_the_failed_attempt(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    # Found by the soak (scenario 12, 1 job in 1.8 million): Dramatiq's worker thread clears the
    # message's exception *after* acking it. The retry was the same message object, so when that
    # thread was slow, its late clear_exception() wiped the retry's own failure: the job counted
    # as done and was never dead-lettered (and a retry that succeeded could see the old failure
    # and run a third time).
    broker = make_broker(partitions=1, min_backoff=10, max_backoff=10)

    @dramatiq.actor(queue_name=unique_name, max_retries=1)
    def job() -> None:
        raise RuntimeError("fails")

    job.send()
    consumer = broker.consume(unique_name)

    def run_and_fail() -> Any:
        deadline = time.monotonic() + 20
        while (message := next(consumer)) is None:
            assert time.monotonic() < deadline, "no message"
        error = RuntimeError("fails")
        message.stuff_exception(error)  # what the worker thread does, in its order
        broker.emit_after("process_message", message, exception=error)
        return message

    first = run_and_fail()
    consumer.ack(first)  # the first attempt's thread acks it, then is descheduled
    second = run_and_fail()
    first.clear_exception()  # ... and clears "its" message only now
    consumer.ack(second)
    more: list[Any] = []
    stop = threading.Event()

    def iterate() -> None:  # what the consumer thread does meanwhile: polls, commits
        while not stop.is_set():
            if (message := next(consumer)) is not None:
                more.append(message)
                consumer.ack(message)

    iterating = threading.Thread(target=iterate)
    iterating.start()
    try:
        broker.join(unique_name, timeout=20_000)
    finally:
        stop.set()
        iterating.join()
        consumer.close()
    assert more == []
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["source_attempts"] == b"2"


def test_dead_lettered_jobs_leave_nothing_behind_in_the_worker(
    make_broker: Callable[..., KafkaBroker], unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect 6: every dead-lettered exception was kept with its traceback, and so with the
    # locals of its frames, for the life of the worker (200 failures of 1 MB: +194 MB).
    # (pytest's log capture keeps the records of Dramatiq's "Failed to process message" with
    # their tracebacks: that logger is off here.)
    monkeypatch.setattr(logging.getLogger("dramatiq.worker.WorkerThread"), "disabled", True)
    broker = make_broker(partitions=2, dead_letter=DeadLetter(max_retries=0))
    alive: weakref.WeakSet[Payload] = weakref.WeakSet()

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        payload = Payload()  # a local of the failing frame
        alive.add(payload)
        raise RuntimeError(f"job {i} fails for good")

    for i in range(150):
        job.send(i)
    run_worker(broker, unique_name, threads=4, fail_fast=False)
    gc.collect()
    assert len(alive) == 0, f"{len(alive)} failed jobs' frames are still alive"
    kept = broker.failures_by_queue[unique_name]
    assert 0 < len(kept) <= 100
    assert all(failure.error_type is RuntimeError for failure in kept)
    with pytest.raises(RuntimeError, match="fails for good"):
        broker.join(unique_name, fail_fast=True)
    assert record_count(broker.bootstrap_servers, f"{unique_name}.XQ") == 150


class Payload:
    """Something large a job's frame holds."""

    def __init__(self) -> None:
        self.data = bytearray(100_000)


def test_a_shutdown_notification_reaches_the_running_job_and_the_next_worker_runs_it_again(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, min_backoff=100)
    events: list[str] = []
    running = threading.Event()

    @dramatiq.actor(queue_name=unique_name, notify_shutdown=True)
    def long() -> None:
        if events:  # the second run: the restarted worker
            events.append("ran again")
            return
        running.set()
        try:
            for _ in range(1000):
                time.sleep(0.01)
        except Shutdown:
            events.append("notified")
            raise
        events.append("not notified")

    long.send()
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    assert running.wait(30)
    worker.stop()
    assert events == ["notified"]
    assert record_count(broker.bootstrap_servers, f"{unique_name}.XQ") == 0, "a shutdown is no failure"
    committed, _ = committed_and_end(broker.bootstrap_servers, broker.group_id, unique_name)
    assert committed.get(0, 0) == 0, "the interrupted job's offset stays uncommitted"

    run_worker(broker, unique_name, threads=2)
    assert events == ["notified", "ran again"]
    assert _committed_is_end(broker, unique_name)
