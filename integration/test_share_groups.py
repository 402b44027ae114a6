"""Share mode against a real Kafka and real ``dramatiq`` workers: a 1-partition queue
consumed by four processes at once, retries, dead letters, ``kill -9`` and SIGTERM."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from dramatiq_kafka.dead_letters.headers import ERROR_TYPE, SOURCE_ATTEMPTS, SOURCE_CONSUMER_GROUP
from integration.conftest import App
from integration.workers import ledger, ledger_lines, ledger_times
from tests.helpers import read_topic, set_group_config, wait_for

pytestmark = [pytest.mark.slow]

THREADS = 4
#: A short record lock (the local Kafka allows 1 s: group.share.min.record.lock.duration.ms).
LOCK_MS = 2_000
#: One long enough that a record coming back before it was released, not expired.
LONG_LOCK_MS = 60_000


def share_app(make_app: Callable[..., App], **env: str) -> App:
    return make_app(1, APP_SHARE_GROUP="1", APP_MIN_BACKOFF="300", **env)


def set_lock(app: App, lock_ms: int) -> None:
    settings = {"share.record.lock.duration.ms": str(lock_ms)}
    set_group_config(app.broker.bootstrap_servers, f"{app.group}.share", settings)


def send_poison(app: App) -> None:
    producer = Producer({"bootstrap.servers": app.broker.bootstrap_servers})
    producer.produce(app.queue, b"\xffthis is no job")
    producer.flush(10)


@pytest.mark.timeout(300)
def test_four_workers_share_one_partition(make_app: Callable[..., App]) -> None:
    app = share_app(make_app)
    total = 2000
    # Everything is sent before any worker exists: the share group must start at the earliest.
    app.failing.send(-1)
    # Kafka lends whole producer batches: the producer connects first, as a running
    # application's is (sent before it connects, every job would be in one batch).
    app.broker.flush_producer()
    send_poison(app)
    # 50 ms jobs: the drain lasts long enough (about 6 s) for the four to have started.
    app.send(total, seconds=0.05)
    workers = [app.start_worker(threads=THREADS) for _ in range(4)]
    wait_for(lambda: len(ledger(app.ledger_dir)) >= total, timeout=240, interval=0.5)
    dead = read_topic(app.broker.bootstrap_servers, f"{app.queue}.XQ", count=2, timeout=60)
    for worker in workers:
        assert worker.terminate() == 0, worker.output()

    done = ledger(app.ledger_dir)
    assert set(done) == set(range(total)), "jobs were lost"
    assert max(done.values()) == 1, "a job ran twice with no fault"
    # Four processes ran jobs of the one partition.
    per_process = Counter(process for process, *_ in ledger_lines(app.ledger_dir))
    assert len(per_process) == 4 and min(per_process.values()) > 0, per_process

    # The failing job ran 1 + max_retries (3) times with its backoff between them, while the
    # other jobs of its partition went on; then it was dead-lettered with today's headers.
    attempts = [at for job_id, _, _, at in ledger_times(app.ledger_dir, "start") if job_id == -1]
    assert len(attempts) == 4, attempts
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # The backoff doubles from min_backoff (300 ms); a delayed job runs no earlier than due.
    assert all(gap >= 0.3 * 2**n - 0.01 for n, gap in enumerate(gaps)), gaps
    meanwhile = [at for job_id, _, _, at in ledger_times(app.ledger_dir) if attempts[0] < at < attempts[-1]]
    assert meanwhile, "the partition waited for the failing job"
    by_type = {record.headers[ERROR_TYPE].decode(): record for record in dead}
    assert set(by_type) == {"RuntimeError", "DecodeError"}, by_type
    failed = by_type["RuntimeError"]
    assert failed.headers[SOURCE_ATTEMPTS] == b"4"
    assert failed.headers[SOURCE_CONSUMER_GROUP] == f"{app.group}.share".encode()
    assert by_type["DecodeError"].value == b"\xffthis is no job"
    logs = "".join(worker.output() for worker in workers)
    assert "Share group" in logs and "share.record.lock.duration.ms" in logs


@pytest.mark.timeout(300)
def test_kill_9_loses_nothing_and_sigterm_finishes_what_runs(make_app: Callable[..., App]) -> None:
    app = share_app(make_app)
    set_lock(app, LOCK_MS)
    total = 400
    app.send(total, seconds=0.05)
    doomed = app.start_worker(threads=THREADS)
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 40, timeout=120, interval=0.2)
    (doomed_process,) = {process for process, *_ in ledger_lines(app.ledger_dir)}
    survivor = app.start_worker(threads=THREADS)
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 100, timeout=120, interval=0.2)
    doomed.kill()
    wait_for(lambda: set(ledger(app.ledger_dir)) >= set(range(total)), timeout=180, interval=0.5)

    done = ledger(app.ledger_dir)
    duplicates = sum(n - 1 for n in done.values())
    # A duplicate is a job the killed worker finished whose ACCEPT had not reached Kafka: at
    # most what it had in flight (a batch of up to its prefetch, 2 x threads).
    assert duplicates <= 2 * THREADS, done.most_common(5)

    # It was killed mid-job; the records it held came back once their lock ran out, and
    # ran in the other process.
    def of(process: str, event: str) -> set[int]:
        return {j for p, j, _, _ in ledger_lines(app.ledger_dir, event) if p == process}

    cut_short = of(doomed_process, "start") - of(doomed_process, "done")
    assert cut_short, "the worker was not killed mid-job"
    others = {j for p, j, _, _ in ledger_lines(app.ledger_dir) if p != doomed_process}
    assert cut_short <= others

    # SIGTERM: the running jobs finish, the rest is released and runs on the next worker.
    set_lock(app, LONG_LOCK_MS)
    app.patient.send(10_000, 2.0)
    for job_id in range(10_001, 10_040):
        app.patient.send(job_id, 0.2)
    app.broker.flush_producer()
    wait_for(lambda: any(j >= 10_000 for j in ledger(app.ledger_dir, "start")), timeout=60, interval=0.1)
    assert survivor.terminate() == 0, survivor.output()
    starts = {j for _, j, _, _ in ledger_lines(app.ledger_dir, "start") if j >= 10_000}
    ends = {j for _, j, _, _ in ledger_lines(app.ledger_dir) if j >= 10_000}
    assert starts <= ends, "a running job was cut short by SIGTERM"
    successor = app.start_worker(threads=THREADS)
    patient_jobs = {10_000, *range(10_001, 10_040)}
    # Released, not left to their lock: they run well before it would run out.
    wait_for(lambda: set(ledger(app.ledger_dir)) >= patient_jobs, timeout=LONG_LOCK_MS / 2000, interval=0.2)
    assert successor.terminate() == 0
    assert max(ledger(app.ledger_dir).values()) <= 1 + duplicates
