"""Scenario 7: chaos. Jobs that fail once, twice, always, or overrun their time limit, on
several partitions, while workers join and leave: every job that can succeed does, exactly the
jobs that cannot are dead-lettered, and the group commits every record."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from integration.conftest import App
from integration.faults import Count, Result, fault_jobs, record
from integration.workers import CliWorker, ledger
from tests.helpers import read_topic, record_count

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PARTITIONS = 6
CHURN_EVERY = 4.0
#: Share of each kind of job (see ``chaotic`` in integration/app.py).
KINDS = {"ok": 0.70, "once": 0.10, "twice": 0.07, "overrun": 0.08, "always": 0.05}
#: Seconds after the last send within which the group must have committed every record.
COMMIT_BOUND = 240.0


@pytest.mark.timeout(1800)
def test_failing_and_overrunning_jobs_under_worker_churn_all_end(make_app: Callable[..., App]) -> None:
    total = max(200, fault_jobs() // 10)
    rng = random.Random(7)
    kinds = {job_id: rng.choices(list(KINDS), weights=list(KINDS.values()))[0] for job_id in range(total)}
    app = make_app(PARTITIONS, APP_MIN_BACKOFF="200", APP_TIME_LIMIT="1000")
    running = [app.start_worker(threads=4), app.start_worker(threads=4)]
    leaving: list[CliWorker] = []
    joins = leaves = 0
    duration = max(20.0, total / 50)
    interval = duration / total
    started = time.monotonic()
    next_churn = started + CHURN_EVERY
    for job_id, kind in kinds.items():
        app.chaotic.send(job_id, kind)
        time.sleep(max(0.0, started + (job_id + 1) * interval - time.monotonic()))
        if time.monotonic() >= next_churn:
            next_churn += CHURN_EVERY
            if len(running) < 2 or (len(running) < 3 and joins <= leaves):
                running.append(app.start_worker(threads=4))
                joins += 1
            else:
                oldest = running.pop(0)
                oldest.process.send_signal(signal.SIGTERM)  # the churn goes on while it stops
                leaving.append(oldest)
                leaves += 1
    app.broker.flush_producer(60)
    last_sent = time.monotonic()
    app.broker.join(app.queue, timeout=int(COMMIT_BOUND * 1000))
    committed_after = time.monotonic() - last_sent
    for worker in leaving + running:
        if worker in running:
            worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(120) == 0, worker.output()

    done = ledger(app.ledger_dir)
    succeeding = {job_id for job_id, kind in kinds.items() if kind != "always"}
    always = set(kinds) - succeeding
    dead = read_topic(
        app.broker.bootstrap_servers,
        f"{app.queue}.XQ",
        count=record_count(app.broker.bootstrap_servers, f"{app.queue}.XQ"),
    )
    dead_ids = Counter(json.loads(letter.value or b"{}")["args"][0] for letter in dead)
    errors = Counter(letter.headers["error_type"].decode() for letter in dead)
    counted = Count(
        sent=len(succeeding),
        executed=len(succeeding & set(done)),
        lost=sorted(succeeding - set(done)),
        duplicates=sum(runs - 1 for runs in done.values()),
    )
    record(
        Result(
            scenario="7-chaos",
            title="chaos: jobs failing once, twice or always, or over their time limit, under worker churn",
            fault=f"{total} jobs ({', '.join(f'{share:.0%} {kind}' for kind, share in KINDS.items())}; "
            f"max_retries 3, time limit 1 s) over {duration:.0f} s on {PARTITIONS} partitions; every "
            f"{CHURN_EVERY:.0f} s a worker (4 threads) joins or gets SIGTERM: {joins} joins, {leaves} leaves",
            count=counted,
            recovery_seconds=round(committed_after, 1),
            recovery_bound=COMMIT_BOUND,
            notes=f"sent = the {len(succeeding)} jobs that can succeed, all of which must run to the end; "
            f"the {len(always)} that always fail are all in the dead-letter topic and nothing else is "
            f"({sum(dead_ids.values())} dead letters, {dict(errors)}); recovery: from the last send to "
            "the group's commits reaching the end of every partition",
        )
    )
    assert counted.lost == [], "jobs that can succeed never did"
    assert set(dead_ids) == always, "the dead-letter topic holds other jobs than those that always fail"
    committed, ends = app.committed_and_end()
    assert committed == ends
