"""Counting jobs under faults, and keeping the counts for ``docs/reliability.md``.

Every fault test ends with :func:`count`: which jobs were sent (their
enqueue succeeded), which ran (the ledger of ``integration/app.py``), how
many were lost and how many ran more than once.  :func:`record` writes the
figures as one JSON file per scenario under ``$FAULT_RESULTS_DIR``
(default ``.fault-results/``); ``integration/report.py`` turns them into
the tables of ``docs/reliability.md``.

``$FAULT_JOBS`` sets the size of the job-count scenarios: 5,000 in
``make test``, 20,000 (the issue's figure) in ``make faults``.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dramatiq_kafka import DeliveryError
from integration.conftest import App
from integration.workers import ROOT, CliWorker, ledger, ledger_times

RESULTS_ENV = "FAULT_RESULTS_DIR"
JOBS_ENV = "FAULT_JOBS"


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or ROOT / ".fault-results")


def fault_jobs(default: int = 5000) -> int:
    """The job count of the scenarios whose size the issue fixes (20,000 in full)."""
    return int(os.environ.get(JOBS_ENV) or default)


@dataclass
class Count:
    """What a fault run did to its jobs.

    ``sent`` are the jobs whose enqueue succeeded; ``executed`` the distinct
    jobs that ran to the end at least once; ``lost`` the sent jobs that never
    did; ``duplicates`` the runs beyond the first.  ``unconfirmed`` are jobs
    whose enqueue raised (a timeout) but which ran anyway: Kafka had them.
    """

    sent: int
    executed: int
    lost: list[int]
    duplicates: int
    unconfirmed: int = 0

    @property
    def lost_count(self) -> int:
        return len(self.lost)


def count(ledger_dir: Path, sent: Iterable[int], attempted: Iterable[int] = ()) -> Count:
    """Count the jobs of a run from its ledger.

    Parameters:
      sent: The job ids whose enqueue succeeded.
      attempted: Job ids whose enqueue failed (or was never confirmed).
    """
    done = ledger(ledger_dir)
    sent_ids = set(sent)
    return Count(
        sent=len(sent_ids),
        executed=len(sent_ids & set(done)),
        lost=sorted(sent_ids - set(done)),
        duplicates=sum(runs - 1 for runs in done.values()),
        unconfirmed=len(set(attempted) & set(done)),
    )


@dataclass
class Result:
    """One row of ``docs/reliability.md``."""

    scenario: str
    title: str
    fault: str
    count: Count
    duplicate_bound: int | None = None
    recovery_seconds: float | None = None
    recovery_bound: float | None = None
    notes: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def record(
    result: Result, *, size: int | None = None, size_name: str = JOBS_ENV, default_size: int = 5000
) -> None:
    """Keep a scenario's figures for the report: one file per scenario and
    size, so the default and the full-size run sit side by side.

    Parameters:
      size: The run's size (``$FAULT_JOBS`` unless given).
      size_name: The variable that sets it, which the report names.
      default_size: Its value in ``make test``.
    """
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["count"]["lost"] = result.count.lost_count
    data["lost_ids"] = result.count.lost[:20]
    data["recorded_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    data["machine"] = (
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    data["size"] = fault_jobs() if size is None else size
    data["size_name"], data["default_size"] = size_name, default_size
    name = f"{result.scenario}-{data['size']}.json"
    (directory / name).write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{result.scenario}: {json.dumps(data['count'])}, recovery {result.recovery_seconds}")


class Traffic(threading.Thread):
    """Sends ``work`` jobs at a steady rate until stopped, noting each outcome.

    Parameters:
      app: Whose ``work`` actor sends.
      rate: Jobs per second.
      dispatch_method: ``"sync"`` or ``"async"``.
      start_id: The first job id; ids go up by one.
      seconds: Each job's sleep.
      limit: Stop after this many jobs.
    """

    def __init__(
        self,
        app: App,
        rate: float,
        dispatch_method: str,
        start_id: int,
        seconds: float = 0.002,
        limit: int | None = None,
    ) -> None:
        super().__init__(name=f"traffic-{dispatch_method}", daemon=True)
        self.app = app
        self.interval = 1 / rate
        self.dispatch_method = dispatch_method
        self.next_id = start_id
        self.seconds = seconds
        self.end_id = None if limit is None else start_id + limit
        self.stopping = threading.Event()
        self.sent_at: dict[int, float] = {}  # enqueue returned (sync: acknowledged)
        self.failed: dict[int, str] = {}  # enqueue raised
        self.message_ids: dict[str, int] = {}

    def run(self) -> None:
        next_send = time.monotonic()
        while not self.stopping.is_set() and self.next_id != self.end_id:
            job_id, self.next_id = self.next_id, self.next_id + 1
            try:
                message = self.app.work.send_with_options(
                    args=(job_id, self.seconds), dispatch_method=self.dispatch_method
                )
            except Exception as e:  # the error a caller would see
                self.failed[job_id] = f"{type(e).__name__}: {e}"
            else:
                self.sent_at[job_id] = time.time()
                self.message_ids[message.message_id] = job_id
            next_send += self.interval
            self.stopping.wait(max(0.0, next_send - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)

    def undelivered(self, failures: list[tuple[str, str]]) -> None:
        """Move async sends that ``flush`` reported as failed from sent to failed."""
        for message_id, reason in failures:
            job_id = self.message_ids.get(message_id)
            if job_id is not None and job_id in self.sent_at:
                del self.sent_at[job_id]
                self.failed[job_id] = reason


def drain_traffic(
    app: App, senders: list[Traffic], worker: CliWorker, *, async_sender: Traffic, sent_before: int
) -> Count:
    """Stop the senders, wait until the group committed every job, stop the
    worker (which must have stayed up), and count the jobs: the first
    ``sent_before`` ids, sent before the traffic, and the senders'.

    ``async_sender`` is the one whose undelivered async sends ``flush`` names.
    """
    for sender in senders:
        sender.stop()
    try:
        app.broker.flush_producer(120)
    except DeliveryError as e:
        async_sender.undelivered(e.failures)
    app.broker.join(app.queue, timeout=180_000)
    assert worker.process.poll() is None, "the worker died:\n" + worker.output()
    assert worker.terminate() == 0, worker.output()
    sent = set(range(sent_before)).union(*(s.sent_at for s in senders))
    failed = set().union(*(s.failed for s in senders))
    return count(app.ledger_dir, sent, failed)


def first_done_after(ledger_dir: Path, moment: float, jobs: Iterable[int]) -> float | None:
    """Seconds from ``moment`` (unix time) to the first run of one of ``jobs`` that ended after it."""
    wanted = set(jobs)
    for job_id, _, _, at in ledger_times(ledger_dir):
        if at >= moment and job_id in wanted:
            return at - moment
    return None
