"""Write ``docs/reliability.md`` from the figures the fault tests recorded.

    python integration/report.py [RESULTS_DIR] [OUTPUT]

Defaults: ``$FAULT_RESULTS_DIR`` or ``.fault-results/``, and
``docs/reliability.md``.  ``make faults`` runs the fault scenarios at full
size and then this script; ``make reliability`` only this script.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from dramatiq_kafka.localkafka import KAFKA_VERSION

ROOT = Path(__file__).resolve().parent.parent
#: What the scenarios' faults would cost with Dramatiq's own brokers (prose, not figures).
COMPARED = Path(__file__).with_name("reliability-compared.md")
#: The soak's scenario, whose samples are plotted.
SOAK = "12-soak"

HEADER = """\
# Reliability under faults

Every job of these runs has an id, and every execution is appended to a ledger file of its
worker process (`integration/app.py`: one `write()` per line, so a `kill -9` cannot leave half a
line), outside the worker's memory. After the fault, the test waits until the consumer group has
committed every record, then counts from the ledgers:

- **sent**: jobs whose enqueue succeeded (a sync send that returned, an async send whose delivery
  was acknowledged);
- **executed**: distinct sent jobs that ran to the end at least once;
- **lost**: sent jobs that never ran to the end (must be 0: every test asserts it);
- **duplicates**: runs beyond the first, with the bound the test asserts;
- **recovery**: how long the jobs took to flow again after the fault (each scenario says from
  when to when).

The workers are `dramatiq integration.app` subprocesses (8 threads unless said), against a real
Kafka {kafka_version} started by `scripts/localkafka.py`, on the 2-core machine that also runs other work:
times are indicative. `make test` runs each scenario once at its default size (5,000 jobs for the
job-count scenarios); `make faults` runs them with `FAULT_JOBS=20000` (the issue's figure).

Regenerate this file with the figures of the last runs:

```bash
make faults                 # runs the fault suite at full size, then writes this file
make reliability            # only writes this file, from .fault-results/*.json
```

The tests: `integration/test_fault_*.py` and `integration/test_soak.py` (its samples: `docs/soak.png`).
"""

FOOTER = """\
## What the scenarios found

- **A restart or a rebalance while a job waited for its retry repeated the jobs finished behind
  it, and started its retries over** (scenario 12, its first runs: 170 of 40,000 jobs ran twice
  over 2 rolling restarts, 1,477 of 1.8 million over 10, past the bound of 1,320; an
  always-failing job could run 4 more times than `max_retries` allowed after each move). Kafka
  commits one offset per partition, and it cannot pass the waiting job. Each commit now also
  carries the partition's progress in its metadata (the jobs finished past the offset, the
  failures of the unfinished ones; `docs/wire-format.md`): the next owner skips the former and
  carries on with the latter's retry counts. The same runs with both fixes: 1 and 2 duplicates.
- **A retried job's failure could be wiped, and the job counted as done** (scenario 12, 1
  always-failing job of 1.8 million committed and missing from the dead-letter topic; in the
  same run a retry that had succeeded ran a third time). Dramatiq's worker thread clears a
  message's exception after acking it, and a retry in place handed out the same message object
  again: a thread descheduled between the two (two cores, sixteen worker threads) cleared the
  next attempt's exception, or the next attempt saw the old one. Each run now gets a proxy of
  its own.
- **A consumer that lost its partitions while the only node was frozen never rejoined** (scenario
  8, 1 run in 4 at first; in the first run of the new test). librdkafka timed the session out,
  reported the partitions lost, and the handle's coordinator connection then kept its requests
  (JoinGroup, commits) queued without ever sending them, after the node answered again: no
  assignment came, no job ran, and closing the handle waited on those requests for good, so the
  worker could not even be stopped. The process's other consumer, on its own connection, rejoined.
  Now a process whose Kafka consumer lost its partitions and heard of no assignment for three
  `session.timeout.ms` replaces it with a new one, which joins as a new member (the stuck client
  is left to close on a thread of its own); since every queue of a process shares that one
  consumer (`group.py`), all of them come back with it.
- **A dead letter too large to copy blocked its partition forever.** A record the topic accepts but
  the worker's producer (`message.max.bytes`, 1 MB by default) or the dead-letter topic does not
  (a 2 MiB value, 1.5 MB of headers) could never be written to the dead-letter topic, and the
  writer retried it forever: the partition's later jobs never ran. Now a write refused for its
  size is written once more without the value and without the original headers over 1 KiB, with
  a `dead_letter_omitted` header saying what was left out and where the original is
  (`source_topic`/`source_partition`@`source_offset`, until the topic's retention deletes it).
- **A record with a mistyped option crashed the consumer in a loop.** `"options": {"retries":
  null}` (or a string `max_retries`, a number as `retry_when`...) written by another producer
  made the consumer thread raise while dead-lettering it, restart, fetch the same record and raise
  again. The options the broker and Dramatiq compute with are now checked when a record is decoded,
  and a record with a wrong one is dead-lettered with the reason (`The record's option 'retries' is
  None, not a count >= 0.`). An `on_retry_exhausted` naming no known actor is refused the same way.
- **Wrong SASL credentials looked like an unreachable Kafka**, after a 10 s timeout. The clients now
  listen to librdkafka's `error_cb`: the worker exits (code 3) and a send raises
  `AuthenticationError: Kafka authentication failed at ...` within about a second (see
  `docs/security.md`).
- **`join()` failed right after a broker start** with `NOT_COORDINATOR` while the group
  coordinator loaded; it now asks again until its timeout.
- Recovery after a worker's `kill -9`, and after a restart of the only node, is bounded by the
  consumer's `session.timeout.ms` (45 s by default): the group waits for the dead member's
  session to expire before it hands its partitions on. The runs use 6-10 s; with the default,
  expect up to 45 s.
"""


def load(directory: Path) -> list[dict[str, Any]]:
    results = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
    return sorted(results, key=lambda r: (r["scenario"], r["size"]))


def seconds(value: float | None, bound: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" + (f" (≤ {bound:g} s)" if bound is not None else "")


def label(run: dict[str, Any]) -> str:
    """Which run: the default size is ``make test``'s."""
    if run["size"] == run.get("default_size", 5000):
        return "make test"
    return f"{run.get('size_name', 'FAULT_JOBS')}={run['size']}"


def section(runs: list[dict[str, Any]]) -> str:
    first = runs[0]
    number, _, _ = first["scenario"].partition("-")
    lines = [
        f"## {number}. {first['title'][0].upper()}{first['title'][1:]}",
        "",
        "| run | fault | sent | executed | lost | duplicates (bound) | recovery (bound) | recorded |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        count = run["count"]
        bound = run.get("duplicate_bound")
        size = label(run)
        lines.append(
            f"| {size} | {run['fault']} | {count['sent']:,} | {count['executed']:,} | {count['lost']} | "
            f"{count['duplicates']}{f' (≤ {bound})' if bound is not None else ''} | "
            f"{seconds(run.get('recovery_seconds'), run.get('recovery_bound'))} | "
            f"{run['recorded_at']} |"
        )
    lines.append("")
    noted = set()
    for run in runs:
        if run.get("notes") and run["notes"] not in noted:  # variants often share their notes
            noted.add(run["notes"])
            lines.append(f"- {label(run)}: {run['notes']}.")
    return "\n".join(lines) + "\n"


def kept_sections(previous: str) -> dict[int, str]:
    """The scenario sections of the file as it was, by number."""
    sections = {}
    for part in re.split(r"(?m)^(?=## )", previous):
        heading = re.match(r"## (\d+)\. ", part)
        if heading:
            sections[int(heading.group(1))] = part.rstrip("\n") + "\n"
    return sections


def render(results: list[dict[str, Any]], previous: str = "") -> str:
    """The file: a section per scenario from ``results``; a scenario with no
    results here keeps its section from ``previous`` (the file as it was)."""
    by_number: dict[int, str] = kept_sections(previous)
    runs_of: dict[int, list[dict[str, Any]]] = {}
    for result in results:  # one section per number: its variants' runs in one table
        runs_of.setdefault(int(result["scenario"].partition("-")[0]), []).append(result)
    for number, runs in runs_of.items():
        by_number[number] = section(runs)
    parts = [HEADER.replace("{kafka_version}", KAFKA_VERSION)]
    if not by_number:
        parts.append("No results recorded yet: run `make faults`.\n")
    parts += [text for _, text in sorted(by_number.items())]  # scenario 10 after 9
    parts.append(COMPARED.read_text())
    parts.append(FOOTER)
    return "\n".join(parts)


def plot_soak(results: list[dict[str, Any]], output: Path) -> bool:
    """Draw the longest soak's samples (RSS, threads, descriptors per worker process)."""
    soaks = [run for run in results if run["scenario"] == SOAK and run.get("extra", {}).get("samples")]
    if not soaks:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = max(soaks, key=lambda run: run["size"])
    samples = run["extra"]["samples"]
    figure, axes = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    for worker in sorted({sample["worker"] for sample in samples}):
        mine = [sample for sample in samples if sample["worker"] == worker]
        for axis, name in zip(axes, ("rss_mib", "threads", "fds"), strict=True):
            axis.plot([sample["at"] for sample in mine], [sample[name] for sample in mine], linewidth=1)
    for axis, label in zip(axes, ("RSS (MiB)", "threads", "open descriptors"), strict=True):
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds of load (one line per worker process; each restart starts a new one)")
    figure.suptitle(f"Soak, {run['size_name']}={run['size']}: worker processes ({run['recorded_at']})")
    figure.tight_layout()
    figure.savefig(output, dpi=80)
    plt.close(figure)
    return True


def main(argv: list[str]) -> int:
    directory = (
        Path(argv[1])
        if len(argv) > 1
        else Path(os.environ.get("FAULT_RESULTS_DIR") or ROOT / ".fault-results")
    )
    output = Path(argv[2]) if len(argv) > 2 else ROOT / "docs" / "reliability.md"
    results = load(directory)
    output.write_text(render(results, output.read_text() if output.exists() else ""))
    if plot_soak(results, output.with_name("soak.png")):
        print(f"wrote {output.with_name('soak.png')}")
    lost = sum(r["count"]["lost"] for r in results)
    print(f"wrote {output} from {len(results)} run(s) in {directory}; lost jobs: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
