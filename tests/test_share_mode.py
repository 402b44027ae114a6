"""Share mode on a real Kafka with an in-process worker: what a share queue refuses, the
attempt number a job sees, a job that outlives its record lock."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from confluent_kafka.admin import AdminClient
from dramatiq import Worker
from dramatiq.middleware import CurrentMessage

from dramatiq_kafka import (
    ConfigurationError,
    CurrentContext,
    DeadLetter,
    KafkaBroker,
    KafkaBrokerError,
    QueueConfig,
)
from dramatiq_kafka.dead_letters.headers import ERROR_MESSAGE, SOURCE_CONSUMER_GROUP
from dramatiq_kafka.delays import TIERS
from dramatiq_kafka.localkafka.settings import KAFKA_VERSION

from .helpers import create_topic, read_topic, set_group_config, wait_for


def test_a_share_queue_refuses_order_and_bad_values() -> None:
    with pytest.raises(ConfigurationError) as found:
        QueueConfig(share_group=True, ordered=True)
    assert str(found.value).startswith(
        "QueueConfig(share_group=True, ordered=True): a share group hands the records of one partition "
        "to many workers at once, so it cannot keep them in order."
    )
    for bad in ("", " ", 1, None):
        with pytest.raises(ConfigurationError, match=r"must be True, False or the share group's id"):
            QueueConfig(share_group=bad)  # type: ignore[arg-type]
    assert QueueConfig(share_group="reports").share_group == "reports"


def test_join_says_why_it_cannot_wait_for_a_share_queue() -> None:
    broker = KafkaBroker(queues={"work": QueueConfig(share_group=True)}, status_interval=None)
    broker.declare_queue("work")
    with pytest.raises(
        KafkaBrokerError, match=r"join\('work'\): the queue is consumed through a share group"
    ):
        broker.join("work")
    broker.close()


@pytest.fixture
def share_broker(kafka_bootstrap: str, unique_name: str) -> Iterator[KafkaBroker]:
    if tuple(int(n) for n in KAFKA_VERSION.split(".")[:2]) < (4, 2):
        pytest.skip("share groups need Kafka 4.2 or later")
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=f"{unique_name}.",
        queues={
            "work": QueueConfig(
                partitions=1, share_group=True, min_backoff=100, dead_letter=DeadLetter(max_retries=3)
            )
        },
        status_interval=None,
    )
    broker.add_middleware(CurrentMessage())
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


def run(broker: KafkaBroker, until: object, timeout: float = 60) -> None:
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_for(until, timeout, 0.1)
    finally:
        worker.stop()


def kept(broker: KafkaBroker, topic: str) -> int:
    return sum(high - low for low, high in broker.admin.watermarks(topic).values())


def test_a_retried_job_sees_its_attempt_and_the_delivery_count(share_broker: KafkaBroker) -> None:
    seen: list[tuple[int, int]] = []

    @dramatiq.actor(queue_name="work")
    def flaky() -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None
        seen.append((message.options.get("retries", 0), message.delivery_count))  # type: ignore[attr-defined]
        if len(seen) < 3:
            raise ValueError("not yet")

    flaky.send()
    run(share_broker, lambda: len(seen) == 3)
    # Each retry is a new record (sent again with its backoff): delivered once, attempt n.
    assert seen == [(0, 1), (1, 1), (2, 1)]


def test_a_job_that_outlives_its_record_lock(
    share_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged when its lock runs out; Kafka delivers it again; at the delivery limit the
    record goes to the dead letters unrun instead of being dropped by Kafka."""
    group = f"{share_broker.group_id}.share"
    set_group_config(
        share_broker.bootstrap_servers,
        group,
        {"share.record.lock.duration.ms": "2000", "share.delivery.count.limit": "3"},
    )
    runs: list[float] = []
    lock = threading.Lock()

    @dramatiq.actor(queue_name="work")
    def slow() -> None:
        with lock:
            runs.append(time.monotonic())
        time.sleep(2.5)

    slow.send()
    dead_letter_topic = share_broker.dead_letter_topic("work")
    with caplog.at_level(logging.INFO):
        run(share_broker, lambda: kept(share_broker, dead_letter_topic) > 0, timeout=40)
    dead = read_topic(share_broker.bootstrap_servers, dead_letter_topic, count=1)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"Share group {group!r}: records are lent for 2000 ms" in logged
    assert "delivered at most 3 times" in logged
    assert "past its record lock (2000 ms): Kafka delivers it again to a consumer of share group" in logged
    assert "delivered 3 times without being acknowledged" in logged
    # Deliveries 1 and 2 ran (one may have been given back unrun, had it waited in a loaded
    # worker); the third went to the dead letters unrun.
    assert 1 <= len(runs) <= 2, runs
    headers = dead[0].headers
    assert headers[ERROR_MESSAGE] == b"delivered 3 times without an acknowledgement"
    assert headers[SOURCE_CONSUMER_GROUP] == group.encode()


request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("share_request_id", default=None)


def test_context_delays_and_on_retry_exhausted_work_as_in_the_default_mode(share_broker: KafkaBroker) -> None:
    share_broker.add_middleware(CurrentContext(request_id))
    seen: dict[str, Any] = {}

    @dramatiq.actor(queue_name="work")
    def later() -> None:
        seen["later"] = (request_id.get(), time.time())

    @dramatiq.actor(queue_name="work")
    def exhausted(message: dict[str, Any], retries: dict[str, Any]) -> None:
        seen["exhausted"] = (message["message_id"], retries)

    @dramatiq.actor(queue_name="work", max_retries=1, on_retry_exhausted="exhausted")
    def doomed() -> None:
        raise RuntimeError("always")

    token = request_id.set("req-7")
    sent_at = time.time()
    later.send_with_options(delay=1500)
    message = doomed.send()
    request_id.reset(token)
    run(share_broker, lambda: "later" in seen and "exhausted" in seen)
    context, ran_at = seen["later"]
    assert context == "req-7" and ran_at - sent_at >= 1.5
    assert seen["exhausted"] == (message.message_id, {"retries": 1, "max_retries": 1})


def test_finished_jobs_are_accepted_while_a_long_job_of_their_batch_runs(share_broker: KafkaBroker) -> None:
    """The acknowledgements of a batch's finished jobs reach Kafka while its slowest job
    still runs: else their locks run out and another consumer runs them again."""
    set_group_config(
        share_broker.bootstrap_servers,
        f"{share_broker.group_id}.share",
        {"share.record.lock.duration.ms": "1500"},
    )
    runs: list[int] = []
    lock = threading.Lock()

    @dramatiq.actor(queue_name="work")
    def job(n: int, seconds: float) -> None:
        with lock:
            runs.append(n)
        time.sleep(seconds)

    share_broker.producer.start()
    job.send(0, 0.0)  # the producer connects: the next sends form small batches, as in an app
    share_broker.flush_producer()
    job.send(1, 3.0)
    for n in range(2, 12):
        job.send(n, 0.0)
    share_broker.flush_producer()
    # Two consumers of the share group in this process: either may get what the other lets go.
    workers = [Worker(share_broker, worker_threads=4, worker_timeout=100) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: set(runs) == set(range(12)), 30, 0.1)
        time.sleep(3.5)  # past the long job's end and its batch's locks
    finally:
        for worker in workers:
            worker.stop()
    duplicates = {n: runs.count(n) for n in set(runs) if runs.count(n) > 1 and n != 1}
    assert duplicates == {}, sorted(runs)


def test_a_retry_that_cannot_be_sent_ends_in_the_dead_letters(
    kafka_bootstrap: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The delay topic refuses a failed job's retry (its copy, traceback included, is larger
    than the topic takes). It is tried again with a backoff, not in a loop; the record comes
    back after its lock, and on its last delivery goes to the dead letters unrun: not lost."""
    if tuple(int(n) for n in KAFKA_VERSION.split(".")[:2]) < (4, 2):
        pytest.skip("share groups need Kafka 4.2 or later")
    from confluent_kafka.admin import NewTopic

    prefix = f"{unique_name}."
    create_topic(kafka_bootstrap, f"{prefix}work", 1)
    create_topic(kafka_bootstrap, f"{prefix}work.XQ", 1)
    small = NewTopic(f"{prefix}work.DQ", TIERS, 1, config={"max.message.bytes": "400"})
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([small])[small.topic].result(10)
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        create_topics=False,
        queues={"work": QueueConfig(partitions=1, share_group=True, min_backoff=100)},
        status_interval=None,
    )
    dramatiq.set_broker(broker)
    set_group_config(
        kafka_bootstrap,
        f"g-{unique_name}.share",
        {"share.record.lock.duration.ms": "1500", "share.delivery.count.limit": "3"},
    )
    runs: list[float] = []

    @dramatiq.actor(queue_name="work")
    def fails() -> None:
        runs.append(time.monotonic())
        raise ValueError("no")

    fails.send()
    broker.flush_producer()
    try:
        with caplog.at_level(logging.INFO):
            worker = Worker(broker, worker_threads=2, worker_timeout=100, queues={"work"})
            worker.start()
            try:
                wait_for(lambda: kept(broker, f"{prefix}work.XQ") > 0, 60, 0.2)
            finally:
                worker.stop()
        retries = [r for r in caplog.records if r.getMessage().startswith("Could not send fails() again")]
        assert 1 <= len(retries) <= 12, len(retries)  # a backoff, not a loop
        assert len(runs) == 2  # deliveries 1 and 2; the third dead-lettered unrun
        (dead,) = read_topic(kafka_bootstrap, f"{prefix}work.XQ", count=1)
        assert dead.headers[ERROR_MESSAGE] == b"delivered 3 times without an acknowledgement"
    finally:
        broker.close()


def test_lag_and_the_dashboard_say_a_share_queue_has_no_committed_offset(
    share_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import json
    import sys
    import types

    from dramatiq_kafka.cli import main
    from dramatiq_kafka.web import make_app

    from .test_web import get

    @dramatiq.actor(queue_name="work")
    def waiting() -> None:
        pass

    for _ in range(3):
        waiting.send()
    share_broker.flush_producer()
    share_group = share_broker.share_group_of("work")
    app_module = types.ModuleType("share_app")
    app_module.broker = share_broker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "share_app", app_module)

    out, err = io.StringIO(), io.StringIO()
    assert main(["lag", "--broker", "share_app", "--json"], out=out, err=err) == 0, err.getvalue()
    report = json.loads(out.getvalue())
    rows = {row["queue"]: row for row in report["partitions"]}
    # The share queue's topic: 3 records, no committed offset, no lag counted.
    assert (rows["work"]["end"], rows["work"]["committed"], rows["work"]["lag"]) == (3, None, None)
    assert rows["work"]["share_group"] == share_group
    assert report["total"] == 0 and "warning" not in err.getvalue()
    out = io.StringIO()
    assert main(["lag", "--broker", "share_app"], out=out, err=err) == 0
    assert f"`kafka-share-groups.sh --describe --group {share_group}` shows it." in out.getvalue()
    line = next(
        line.split() for line in out.getvalue().splitlines() if line.startswith("work ") and " 0 " in line
    )
    assert line == ["work", "0", "-", "3", "-"], out.getvalue()

    app = make_app(share_broker, cache_seconds=0, sample_every=None)
    _, page = get(app, "/queue/work")
    assert f"Consumed through the share group {share_group}, which commits no offset" in page
    assert "<td>0</td><td>3</td><td>-</td><td>-</td>" in page, page
    _, page = get(app, "/")
    assert ">work</a></td><td>1</td><td>3</td><td>-</td>" in page, page
