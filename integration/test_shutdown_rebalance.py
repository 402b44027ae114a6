"""Shutdown, rebalance and revocation, with ``dramatiq`` CLI workers as subprocesses."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from dramatiq_kafka.wire import encode_message, message_headers
from integration.conftest import App
from integration.workers import ledger, ledger_lines
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def test_sigterm_finishes_the_running_job_and_leaves_the_next_for_the_restart(
    make_app: Callable[..., App],
) -> None:
    app = make_app(partitions=1)
    app.work.send(0, 0.0)
    app.work.send(1, 15.0)
    app.work.send(2, 15.0)
    app.broker.flush_producer()
    worker = app.start_worker(threads=1)
    wait_for(lambda: 1 in ledger(app.ledger_dir, "start"), timeout=60)
    started = time.monotonic()
    assert worker.terminate() == 0
    print(f"\nSIGTERM to exit with a 15 s job running: {time.monotonic() - started:.1f}s")

    assert ledger(app.ledger_dir) == {0: 1, 1: 1}
    assert 2 not in ledger(app.ledger_dir, "start")
    committed, _ = app.committed_and_end()
    assert committed == {0: 2}

    restarted = app.start_worker(threads=1)
    app.broker.join(app.queue, timeout=60_000)
    assert restarted.terminate() == 0
    assert ledger(app.ledger_dir) == {0: 1, 1: 1, 2: 1}


def test_sigterm_as_the_first_of_five_slow_jobs_starts(make_app: Callable[..., App]) -> None:
    app = make_app(partitions=1)
    app.send(5, seconds=3)
    worker = app.start_worker(threads=1)
    wait_for(lambda: 0 in ledger(app.ledger_dir, "start"), timeout=60)
    assert worker.terminate() == 0
    assert ledger(app.ledger_dir) == {0: 1}

    restarted = app.start_worker(threads=1)
    app.broker.join(app.queue, timeout=60_000)
    assert restarted.terminate() == 0
    assert ledger(app.ledger_dir) == {i: 1 for i in range(5)}


def test_sigterm_during_a_long_retry_backoff_exits_promptly(make_app: Callable[..., App]) -> None:
    app = make_app(partitions=1, APP_MIN_BACKOFF="60000")
    app.failing.send(0)
    app.broker.flush_producer()
    worker = app.start_worker(threads=1)
    wait_for(lambda: 0 in ledger(app.ledger_dir, "start"), timeout=60)
    wait_for(lambda: "runs it again in 60.0s" in worker.output(), timeout=10)
    started = time.monotonic()
    assert worker.terminate() == 0
    elapsed = time.monotonic() - started
    print(f"\nSIGTERM to exit during a 60 s backoff: {elapsed:.1f}s")
    assert elapsed < 15
    committed, _ = app.committed_and_end()
    assert committed == {0: 0}


def test_a_joining_worker_starts_after_the_committed_offsets_and_takes_some_partitions(
    make_app: Callable[..., App],
) -> None:
    app = make_app(partitions=10)
    first = app.start_worker(threads=4)
    wait_for(lambda: first.assigned(app.queue), timeout=60)
    sending = threading.Event()
    sent: list[int] = []

    def traffic() -> None:
        while not sending.is_set():
            app.work.send(len(sent), 0.02)
            sent.append(len(sent))
            time.sleep(0.005)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(4)
        # Ledger files are per worker process: the joiner's is the new one.
        before = {path.stem for path in app.ledger_dir.glob("*.log")}
        second = app.start_worker(threads=4)
        wait_for(lambda: second.assigned(app.queue), timeout=60)
        time.sleep(4)
    finally:
        sending.set()
        sender.join()
    app.broker.flush_producer()
    app.broker.join(app.queue, timeout=120_000)
    assert first.terminate() == 0
    assert second.terminate() == 0

    done = ledger(app.ledger_dir)
    assert set(done) == set(range(len(sent)))
    runs = ledger_lines(app.ledger_dir)
    files = sorted({name for name, *_ in runs})
    assert len(files) == 2, "both workers ran jobs"
    [joiner] = set(files) - before
    joiner_offsets = [offset for name, _, _, offset in runs if name == joiner]
    assert joiner_offsets[0] > 0, "the joiner started at the committed offset, not at 0"
    duplicates = sum(count - 1 for count in done.values())
    before_shutdown = first.output().split("Stopping worker process")[0]
    pattern = rf"Partitions \[([\d, ]+)\] of '{app.queue}' revoked"
    revoked = [len(match.group(1).split(",")) for match in re.finditer(pattern, before_shutdown)]
    print(f"\n{len(sent)} jobs, {duplicates} ran in both workers; revoked from the first: {revoked}")
    # Jobs running at the revocation finish within the grace period and are committed.
    assert duplicates == 0
    assert revoked and sum(revoked) < 10, "cooperative-sticky moves some partitions, not all"


def test_a_long_job_sees_its_partition_revoked_and_its_ack_commits_nothing(
    make_app: Callable[..., App],
) -> None:
    app = make_app(partitions=2)
    first = app.start_worker(threads=2)
    wait_for(lambda: first.assigned(app.queue), timeout=60)
    producer = Producer({"bootstrap.servers": app.broker.bootstrap_servers})
    for partition in range(2):  # one job per partition
        message = app.patient.message(partition, 20.0)
        producer.produce(
            app.queue, encode_message(message), partition=partition, headers=message_headers(message)
        )
    producer.flush(10)
    wait_for(lambda: len(ledger(app.ledger_dir, "start")) == 2, timeout=30)
    # Which of the two partitions moves is the assignor's choice.

    second = app.start_worker(threads=2)
    wait_for(lambda: len(ledger(app.ledger_dir, "revoked")) == 1, timeout=60)
    time.sleep(1)
    committed, _ = app.committed_and_end()
    assert committed == {0: 0, 1: 0}, "the revoked job's ack committed its offset"

    app.broker.join(app.queue, timeout=90_000)
    assert first.terminate() == 0
    assert second.terminate() == 0
    [revoked_job] = ledger(app.ledger_dir, "revoked")
    # The new owner ran it again, from the start, to the end.
    assert ledger(app.ledger_dir) == {0: 1, 1: 1}
    assert ledger(app.ledger_dir, "start")[revoked_job] == 2
