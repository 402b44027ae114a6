"""The read-only dashboard against a real Kafka and a real worker."""

from __future__ import annotations

import io
import re
import threading
from typing import Any

import dramatiq
from dramatiq import Worker

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.status import process_key
from dramatiq_kafka.web import make_app

from .helpers import wait_for


def get(app: Any, path: str, method: str = "GET") -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = b"".join(
        app({"PATH_INFO": path, "REQUEST_METHOD": method, "wsgi.input": io.BytesIO()}, start_response)
    )
    return seen["status"], body.decode()


def test_the_pages_show_what_kafka_says(kafka_bootstrap: str, unique_name: str) -> None:
    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        status_interval=0.5,
    )
    dramatiq.set_broker(broker)
    release = threading.Event()

    @dramatiq.actor(queue_name="work")
    def hold(token: str) -> None:
        release.wait(30)

    for _ in range(5):
        hold.send("<script>hunter2</script>")
    broker.flush_producer()
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    app = make_app(broker, cache_seconds=0, sample_every=None)
    try:
        # The worker's status record names its partitions once it holds them (a
        # rebalance as its delay queue's consumer joins may take them away a moment).
        wait_for(lambda: "work/" in get(app, "/workers")[1], 30, 0.5)
        lags = broker.admin.lag(f"{prefix}work")
        status, page = get(app, "/")
        assert status.startswith("200")
        row = re.search(r'<a href="queue/work">work</a></td>(.*?)</tr>', page)
        assert row is not None
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[:3] == [str(len(lags)), str(sum(p.end for p in lags)), str(sum(p.lag for p in lags))]
        _, queue = get(app, "/queue/work")
        assert queue.split("<h2>")[0].count("<tr>") == len(lags) + 1
        wait_for(lambda: "work/" in get(app, "/workers")[1], 30, 0.5)
        _, workers = get(app, "/workers")
        assert "hunter2" not in page + queue + workers and kafka_bootstrap not in page + queue + workers
        assert get(app, "/", "POST")[0].startswith("405")
        assert get(app, "/queue/nope")[0].startswith("404")
    finally:
        release.set()
        worker.stop()
        broker.close()


def test_a_paused_partition_shows_why(kafka_bootstrap: str, unique_name: str) -> None:
    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        status_interval=0.5,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work", max_retries=5, min_backoff=60_000, max_backoff=60_000)
    def fails() -> None:
        raise ValueError("no")

    fails.send()
    broker.flush_producer()
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    app = make_app(broker, cache_seconds=0, sample_every=None)
    try:
        wait_for(lambda: "waits for retry 1" in get(app, "/queue/work")[1], 40, 0.5)
        page = get(app, "/queue/work")[1]
        assert "offset 0 waits for retry 1 (due in" in page and "paused" in page
        row = re.search(r'<a href="queue/work">work</a></td>(.*?)</tr>', get(app, "/")[1])
        assert row is not None and re.findall(r"<td>(.*?)</td>", row.group(1))[3] == "1"
    finally:
        worker.stop()
        broker.close()


def test_a_delayed_job_waits_in_its_tier(kafka_bootstrap: str, unique_name: str) -> None:
    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        status_interval=0.5,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work")
    def later() -> None:
        pass

    later.send_with_options(delay=20_000)  # the 30 s tier
    broker.flush_producer()
    app = make_app(broker, cache_seconds=0, sample_every=None)
    page = get(app, "/queue/work")[1]
    row = re.search(r"<td>up to 30s</td><td>[0-9, ]+</td><td>(\d+)</td><td>-</td>", page)
    assert row is not None and row.group(1) == "1", page
    overview = re.search(r'<a href="queue/work">work</a></td>(.*?)</tr>', get(app, "/")[1])
    assert overview is not None and re.findall(r"<td>(.*?)</td>", overview.group(1))[5] == "1"  # delayed
    # Once a worker holds it, its status record says when it falls due.
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        due = r"<td>up to 30s</td><td>[0-9, ]+</td><td>1</td><td>in (\d+)s</td>"
        wait_for(lambda: re.search(due, get(app, "/queue/work")[1]) is not None, 30, 0.5)
        found = re.search(due, get(app, "/queue/work")[1])
        assert found is not None and 0 <= int(found.group(1)) <= 20
    finally:
        worker.stop()
        app.close()
        broker.close()


def test_the_overview_shows_jobs_per_second_and_the_lag_trend(kafka_bootstrap: str, unique_name: str) -> None:
    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        status_interval=None,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work")
    def job() -> None:
        pass

    job.send()
    broker.flush_producer()
    # The sampler reads the lag on its own, from the first request on.
    app = make_app(broker, cache_seconds=0, sample_every=0.5)
    try:
        first = get(app, "/")[1]
        assert "collecting" in first
        for _ in range(20):
            job.send()
        broker.flush_producer()
        wait_for(lambda: len(app_history(app)) >= 3, 20, 0.2)
        page = get(app, "/")[1]
        row = re.search(r'<a href="queue/work">work</a></td>(.*?)</tr>', page)
        assert row is not None
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert "<polyline" in cells[-1] and "21 now" in cells[-1]
        queue = get(app, "/queue/work")[1]
        assert queue.count("<polyline") == 3 and "jobs/s sent" in queue
    finally:
        app.close()
        broker.close()


def app_history(app: Any) -> list[Any]:
    """The samples the app's dashboard holds of queue ``work`` (read through the overview's trend)."""
    page = get(app, "/")[1]
    found = re.search(r'points="([^"]*)"', page)
    return found.group(1).split() if found else []


def test_the_workers_page_names_group_members_without_a_status_record(
    kafka_bootstrap: str, unique_name: str
) -> None:
    prefix = f"{unique_name}."
    group = f"g-{unique_name}"
    reporting = KafkaBroker(
        bootstrap_servers=kafka_bootstrap, group_id=group, topic_prefix=prefix, status_interval=0.5
    )
    silent = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        topic_prefix=prefix,
        status_interval=None,
        consumer_config={"client.id": "legacy-worker"},
    )
    workers = []
    for broker in (reporting, silent):
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="work", broker=broker)
        def job() -> None:
            pass

        workers.append(Worker(broker, worker_threads=1, worker_timeout=100))
        workers[-1].start()
    app = make_app(reporting, cache_seconds=0, sample_every=None)
    try:

        def both_seen() -> bool:
            statuses, silent_members = get(app, "/workers")[1].split("Group members without a status record")
            return process_key() in statuses and "legacy-worker" in silent_members

        wait_for(both_seen, 40, 0.5)
        silent_members = get(app, "/workers")[1].split("Group members without a status record")[1]
        assert "dramatiq-kafka@" not in silent_members  # the reporting process is matched
    finally:
        for worker in workers:
            worker.stop()
        app.close()
        reporting.close()
        silent.close()
