"""Scenario 12: a soak. Mixed load for ``$SOAK_SECONDS`` (1,800 in ``make soak`` and ``make
faults``, 30 in ``make test``): 1,000 jobs/s, 5 % failing once, 1 % always failing, 2 % delayed,
and a rolling restart of the two workers every few minutes. Every job is counted; each worker's
RSS, threads and open file descriptors are sampled, must stay flat after its warm-up, and are
plotted by ``integration/report.py`` (``docs/soak.png``); at the end no partition is paused."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from dramatiq.common import current_millis

from dramatiq_kafka import DeliveryError
from dramatiq_kafka.status import read_status
from integration.conftest import App
from integration.faults import Count, Result, record
from integration.workers import CliWorker, ledger, ledger_times
from tests.helpers import read_topic, record_count, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SOAK_ENV = "SOAK_SECONDS"
#: ``make test``'s soak.
SHORT_SECONDS = 30
RATE = 1000
PARTITIONS = 12
WORKERS = 2
THREADS = 8
#: Share of each kind of job: ``chaotic`` jobs (``ok``, ``once``, ``always``) and ``timed`` ones.
KINDS = {"ok": 0.92, "once": 0.05, "always": 0.01, "delayed": 0.02}
#: Jobs repeated at most per replaced worker, as in scenario 4 (8 threads).
REPEAT_WINDOW = 2 * 2 * THREADS + 100
#: After its warm-up, how much a worker may grow by its last samples (medians of 3).
RSS_TOLERANCE = (0.10, 16.0)  # 10 %, and at least 16 MiB
FD_TOLERANCE = 4
THREAD_TOLERANCE = 2


def soak_seconds() -> int:
    return int(os.environ.get(SOAK_ENV) or SHORT_SECONDS)


@dataclass
class Sample:
    """One worker process's use at one moment (``at``: seconds from the start of the load)."""

    worker: int
    at: float
    rss_mib: float
    threads: int
    fds: int


def worker_process(leader: int) -> int | None:
    """The ``dramatiq`` worker process forked by the command of pid ``leader``."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == leader:
            return int(entry.name)
    return None


def usage(pid: int) -> tuple[float, int, int] | None:
    """RSS (MiB), threads and open descriptors of a process, or ``None`` once it is gone."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"]), fds


class Soak:
    """The workers of the run: samples them, and replaces each in turn every ``roll_every`` s
    (the new one joins and gets partitions before the old one gets SIGTERM, as a rolling
    deployment does)."""

    def __init__(self, app: App, roll_every: float, sample_every: float) -> None:
        self.app = app
        self.roll_every = roll_every
        self.sample_every = sample_every
        self.running = [app.start_worker(threads=THREADS) for _ in range(WORKERS)]
        self.stopped: list[CliWorker] = []
        self.samples: list[Sample] = []
        self.problems: list[str] = []
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._roll, daemon=True),
        ]

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(180)

    def _sample(self) -> None:
        pids: dict[int, int] = {}
        while not self.stopping.wait(self.sample_every):
            for worker in list(self.running):
                index = self.app.workers.index(worker)
                pid = pids.get(index) or worker_process(worker.process.pid)
                used = None if pid is None else usage(pid)
                if pid is None or used is None:
                    continue
                pids[index] = pid
                self.samples.append(Sample(index, round(time.monotonic() - self.started, 1), *used))

    def _roll(self) -> None:
        while not self.stopping.wait(self.roll_every):
            for slot in range(len(self.running)):
                new = self.app.start_worker(threads=THREADS)
                try:
                    wait_for(lambda new=new: new.assigned(self.app.queue), timeout=90, interval=0.5)
                except AssertionError:
                    self.problems.append(f"worker {self.app.workers.index(new)} got no partition in 90 s")
                old, self.running[slot] = self.running[slot], new
                old.process.send_signal(signal.SIGTERM)
                if old.process.wait(120) != 0:
                    self.problems.append(
                        f"worker {self.app.workers.index(old)} exited {old.process.returncode}"
                    )
                self.stopped.append(old)
                if self.stopping.is_set():
                    return

    def grown(self) -> list[str]:
        """The workers whose use grew past the tolerances after their warm-up (a third of their
        samples, at least 3): medians of their first 3 samples after it and of their last 3."""
        found = []
        for index in sorted({sample.worker for sample in self.samples}):
            mine = [sample for sample in self.samples if sample.worker == index]
            steady = mine[max(3, len(mine) // 3) :]
            if len(steady) < 6:
                continue
            for name, tolerance in (
                ("rss_mib", max(RSS_TOLERANCE[1], RSS_TOLERANCE[0] * median(steady[:3], "rss_mib"))),
                ("fds", FD_TOLERANCE),
                ("threads", THREAD_TOLERANCE),
            ):
                before, after = median(steady[:3], name), median(steady[-3:], name)
                if after - before > tolerance:
                    found.append(f"worker {index}: {name} {before:g} -> {after:g} (tolerance {tolerance:g})")
        return found


def median(samples: list[Sample], name: str) -> float:
    values = sorted(getattr(sample, name) for sample in samples)
    return float(values[len(values) // 2])


@pytest.mark.timeout(7200)
def test_mixed_load_with_rolling_restarts_loses_nothing_and_leaks_nothing(
    make_app: Callable[..., App],
) -> None:
    seconds = soak_seconds()
    short = seconds < 300
    roll_every = seconds / 2 if short else 300.0
    delays = (500, 5000) if short else (1000, 30_000)
    app = make_app(PARTITIONS, APP_MIN_BACKOFF="100", APP_TIME_LIMIT="10000")
    soak = Soak(app, roll_every, sample_every=1.0 if short else 5.0)
    wait_for(lambda: all(worker.assigned(app.queue) for worker in soak.running), timeout=60, interval=0.5)

    rng = random.Random(12)
    kinds: dict[int, str] = {}
    due: dict[int, int] = {}
    message_ids: dict[str, int] = {}
    soak.start()
    started = time.monotonic()
    job_id = 0
    while time.monotonic() - started < seconds:
        kind = kinds[job_id] = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        if kind == "delayed":
            delay = rng.randint(*delays)
            due[job_id] = current_millis() + delay
            message = app.timed.send_with_options(args=(job_id, due[job_id]), delay=delay)
        else:
            message = app.chaotic.send(job_id, kind)
        message_ids[message.message_id] = job_id
        job_id += 1
        time.sleep(max(0.0, started + job_id / RATE - time.monotonic()))
    sent_for = time.monotonic() - started
    undelivered: set[int] = set()
    try:
        app.broker.flush_producer(120)
    except DeliveryError as e:
        undelivered = {message_ids[message_id] for message_id, _ in e.failures}
    last_sent = time.monotonic()
    soak.stop()
    app.broker.join(app.queue, timeout=600_000)
    drained_after = time.monotonic() - last_sent

    # The workers' latest status records, published after the drain: what is still paused.
    time.sleep(6)
    pids = {worker_process(worker.process.pid) for worker in soak.running}
    statuses = [
        status
        for status in read_status(
            {"bootstrap.servers": app.broker.bootstrap_servers, **app.config}, app.broker.topic_prefix
        ).values()
        if status.get("group") == app.group and status.get("pid") in pids
    ]
    paused = [
        f"{queue['queue']}[{partition['partition']}]: {partition.get('pause_reason')}"
        for status in statuses
        for queue in status["queues"]
        for partition in queue["partitions"]
        if partition["paused"]
    ]
    for worker in soak.running:
        assert worker.terminate(120) == 0, worker.output()

    sent = set(kinds) - undelivered
    always = {job for job in sent if kinds[job] == "always"}
    succeeding = sent - always
    done = ledger(app.ledger_dir)
    early = {job: at for job, _, _, at in ledger_times(app.ledger_dir, "early")}
    counted = Count(
        sent=len(succeeding),
        executed=len(succeeding & (set(done) | set(early))),
        lost=sorted(succeeding - set(done) - set(early)),
        duplicates=sum(runs - 1 for runs in done.values()),
    )
    dead = read_topic(
        app.broker.bootstrap_servers,
        f"{app.queue}.XQ",
        count=record_count(app.broker.bootstrap_servers, f"{app.queue}.XQ"),
    )
    dead_ids = Counter(json.loads(letter.value or b"{}")["args"][0] for letter in dead)
    replaced = len(soak.stopped)
    bound = replaced * REPEAT_WINDOW
    grown = soak.grown()
    by_kind = Counter(kinds[job] for job in sent)
    rss = [sample.rss_mib for sample in soak.samples]
    fds = [sample.fds for sample in soak.samples]
    threads = [sample.threads for sample in soak.samples]
    record(
        Result(
            scenario="12-soak",
            title="soak: mixed load and rolling restarts",
            fault=f"{len(kinds):,} jobs at {len(kinds) / sent_for:,.0f}/s for {sent_for:,.0f} s "
            f"({by_kind['once']} failing once, {by_kind['always']} always, {by_kind['delayed']} delayed "
            f"{delays[0] / 1000:g}-{delays[1] / 1000:g} s), {PARTITIONS} partitions, {WORKERS} workers "
            f"of {THREADS} threads; every {roll_every:.0f} s each replaced in turn: {replaced} restarts",
            count=counted,
            duplicate_bound=bound,
            recovery_seconds=round(drained_after, 1),
            notes=f"sent = the {len(succeeding):,} jobs that can succeed; the {len(always)} that always fail "
            f"are the dead letters ({sum(dead_ids.values())}); {len(early)} delayed jobs ran early; per "
            f"worker process RSS {min(rss, default=0):.0f}-{max(rss, default=0):.0f} MiB, threads "
            f"{min(threads, default=0)}-{max(threads, default=0)}, descriptors {min(fds, default=0)}-"
            f"{max(fds, default=0)} ({len(soak.samples)} samples, `docs/soak.png` from the longest run), "
            f"growth after warm-up past the tolerance (RSS {RSS_TOLERANCE[0]:.0%} or "
            f"{RSS_TOLERANCE[1]:g} MiB, {FD_TOLERANCE} descriptors, {THREAD_TOLERANCE} threads): "
            f"{'; '.join(grown) or 'none'}; partitions paused at the end: {len(paused)}; recovery: from "
            "the last send to the group's commits reaching the end of every partition",
            extra={"samples": [asdict(sample) for sample in soak.samples], "roll_every": roll_every},
        ),
        size=seconds,
        size_name=SOAK_ENV,
        default_size=SHORT_SECONDS,
    )
    assert soak.problems == []
    assert counted.lost == [], "jobs that can succeed never did"
    assert early == {}, {job: f"{due[job] / 1000 - at:.3f} s early" for job, at in early.items()}
    assert set(dead_ids) == always, "the dead-letter topic holds other jobs than those that always fail"
    assert counted.duplicates <= bound
    assert grown == []
    assert paused == []
    committed, ends = app.committed_and_end()
    assert committed == ends
