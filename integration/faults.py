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
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from integration.workers import ROOT, ledger

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


def record(result: Result) -> None:
    """Keep a scenario's figures for the report: one file per scenario and
    ``$FAULT_JOBS``, so the default and the full-size run sit side by side."""
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["count"]["lost"] = result.count.lost_count
    data["lost_ids"] = result.count.lost[:20]
    data["recorded_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    data["machine"] = (
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    data["size"] = fault_jobs()
    name = f"{result.scenario}-{fault_jobs()}.json"
    (directory / name).write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n{result.scenario}: {json.dumps(data['count'])}, recovery {result.recovery_seconds}")
