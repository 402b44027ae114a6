"""Worker memory with many delayed jobs waiting, and how late due jobs start.

    .venv/bin/python benchmarks/delays.py [--jobs 200000] [--seconds 20]

Uses $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS or starts a local Kafka node.  For
each backlog (JOBS, then 2 x JOBS delayed jobs due in an hour, on a
12-partition queue) it starts a worker process (8 threads), lets it fetch
for SECONDS, and prints its peak RSS beside the RSS of the same worker with
nothing waiting; then it sends 200 jobs due in 1 s through that backlog and
prints how late they started (p50, max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dramatiq
from dramatiq import Worker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dramatiq_kafka import (  # noqa: E402
    BOOTSTRAP_SERVERS_ENV,
    KafkaBroker,
    QueueConfig,
    localkafka,
)

HOUR = 3_600_000


def make_broker(bootstrap: str, queue: str) -> tuple[KafkaBroker, dramatiq.Actor[..., None]]:
    broker = KafkaBroker(
        bootstrap_servers=bootstrap, group_id=f"bench-{queue}", queues={queue: QueueConfig(partitions=12)}
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue, actor_name="stamp")
    def stamp(due: float) -> None:
        sys.stdout.write(json.dumps({"late": time.time() - due}) + "\n")

    return broker, stamp


def run_worker(bootstrap: str, queue: str, seconds: float, probe: bool) -> None:
    """The worker process: fetch for ``seconds``, optionally send probes, report."""
    broker, stamp = make_broker(bootstrap, queue)
    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    time.sleep(seconds)
    if probe:
        broker.enqueue_many([stamp.message(time.time() + 1.0) for _ in range(200)], delay=1000)
        time.sleep(5)
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across exec.
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss_mb, peak_mb = (int(status[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))
    worker.stop()
    print(json.dumps({"rss_mb": rss_mb, "peak_mb": peak_mb}), flush=True)
    broker.close()


def measure(bootstrap: str, backlog: int, seconds: float) -> dict[str, float]:
    queue = f"bench-delays-{uuid.uuid4().hex[:8]}"
    broker, stamp = make_broker(bootstrap, queue)
    for start in range(0, backlog, 10_000):
        broker.enqueue_many([stamp.message(0.0) for _ in range(min(10_000, backlog - start))], delay=HOUR)
    broker.flush_producer()
    broker.close()
    output = subprocess.run(
        [sys.executable, __file__, "--worker", queue, "--seconds", str(seconds), "--probe"],
        env={**os.environ, BOOTSTRAP_SERVERS_ENV: bootstrap},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    late = sorted(line["late"] for line in lines if "late" in line)
    rss = next(line for line in lines if "rss_mb" in line)
    return {
        "rss_mb": rss["rss_mb"],
        "peak_mb": rss["peak_mb"],
        "late_p50": statistics.median(late) if late else float("nan"),
        "late_max": max(late, default=float("nan")),
        "probes": len(late),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--worker")
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args()
    bootstrap = os.environ.get(BOOTSTRAP_SERVERS_ENV)
    if args.worker:
        run_worker(bootstrap or "", args.worker, args.seconds, args.probe)
        return
    cluster = None
    if not bootstrap:
        cluster = localkafka.start_single()
        bootstrap = cluster.bootstrap_servers
    try:
        rows = [
            (backlog, measure(bootstrap, backlog, args.seconds)) for backlog in (0, args.jobs, 2 * args.jobs)
        ]
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"\n{'delayed jobs waiting':>22} {'RSS (MB)':>9} {'peak':>6} {'1 s jobs late p50':>18} {'max':>8}")
    for backlog, row in rows:
        print(
            f"{backlog:>22,} {row['rss_mb']:>9.0f} {row['peak_mb']:>6.0f} "
            f"{row['late_p50']:>17.3f}s {row['late_max']:>7.3f}s"
            f"   ({row['probes']:.0f} of 200 ran)"
        )
    base, single, double = (row["rss_mb"] for _, row in rows)
    print(f"RSS growth {single - base:.0f} MB at {args.jobs:,}, {double - base:.0f} MB at {2 * args.jobs:,}")


if __name__ == "__main__":
    main()
