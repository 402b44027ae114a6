"""How soon a fresh worker runs its first jobs, and what an in-place retry costs.

    .venv/bin/python benchmarks/fresh_worker.py [REF] [--rounds 7]

Each measurement runs in a fresh interpreter (a new broker, producer and consumer group, as in a
newly started ``dramatiq`` process or in each of Dramatiq's own tests), on a local Kafka started
for the run (unless ``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` is set).  With REF (a commit, tag or
branch), the same measurements of that checkout run in alternating rounds beside this one, from a
temporary git worktree.  Printed: each round, then the medians in milliseconds.

- ``group``: a worker starts, an actor is declared, a group of 3 jobs of 0.1 s is sent at once
  (Dramatiq's ``test_groups_execute_jobs_in_parallel``): from the send until all 3 ran.
- ``backlog``: 3 jobs wait in the queue before the worker starts: from ``Worker.start()`` until
  the first job started (the group join, the first fetch).
- ``retries``: a job failing 10 times with zero backoff, then succeeding: from its first start
  until its 11th (10 in-place retries).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = ("group", "backlog", "retries")


def child(spec: dict[str, Any]) -> float:
    """One measurement in this interpreter, in seconds."""
    import dramatiq
    from dramatiq import Worker, group

    from dramatiq_kafka import KafkaBroker

    name = uuid.uuid4().hex[:10]
    broker = KafkaBroker(
        bootstrap_servers=spec["kafka"], group_id=f"fresh-{name}", topic_prefix=f"fresh-{name}."
    )
    broker.emit_after("process_boot")  # what the dramatiq command does in each worker process
    dramatiq.set_broker(broker)
    starts: list[float] = []
    ran = threading.Event()
    case = spec["case"]
    try:
        if case == "group":
            worker = Worker(broker, worker_timeout=100, worker_threads=8)
            worker.start()

            @dramatiq.actor
            def wait() -> None:
                starts.append(time.monotonic())
                if len(starts) == 3:
                    ran.set()
                time.sleep(0.1)

            sent = time.monotonic()
            group([wait.message() for _ in range(3)]).run()
            ran.wait(30)
            return max(starts) - sent
        if case == "backlog":

            @dramatiq.actor
            def first() -> None:
                starts.append(time.monotonic())
                ran.set()

            for _ in range(3):
                first.send()
            broker.flush_producer()
            worker = Worker(broker, worker_timeout=100, worker_threads=8)
            began = time.monotonic()
            worker.start()
            ran.wait(30)
            return starts[0] - began
        if case == "retries":
            worker = Worker(broker, worker_timeout=100, worker_threads=8)
            worker.start()

            @dramatiq.actor(max_retries=10, min_backoff=0, max_backoff=0)
            def flaky() -> None:
                starts.append(time.monotonic())
                if len(starts) <= 10:
                    raise RuntimeError("fails 10 times")
                ran.set()

            flaky.send()
            ran.wait(60)
            return starts[-1] - starts[0]
        raise SystemExit(f"unknown case {case!r}")
    finally:
        worker.stop()
        broker.close()


def run_child(checkout: Path, spec: dict[str, Any]) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(HERE / "fresh_worker.py"), "--child", json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=checkout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(line[len("RESULT ") :])
    raise RuntimeError(f"{spec['case']} in {checkout} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", nargs="?", help="a commit to measure beside this checkout")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(f"RESULT {child(json.loads(args.child))}", flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    from sides import checkout, kafka

    with tempfile.TemporaryDirectory(prefix="dramatiq-kafka-fresh-") as tmp:
        with checkout(args.ref, Path(tmp)) as baseline, kafka(Path(tmp)) as bootstrap:
            sides = {"this": ROOT} if baseline is None else {"this": ROOT, args.ref: baseline}
            figures: dict[tuple[str, str], list[float]] = {}
            for number in range(args.rounds + 1):  # round 0 warms Kafka up and is not counted
                order = list(sides.items()) if number % 2 else list(sides.items())[::-1]
                for case in CASES:
                    for side, tree in order:
                        seconds = run_child(tree, {"case": case, "kafka": bootstrap})
                        if number:
                            figures.setdefault((case, side), []).append(seconds)
                        print(f"round {number} {case:8} {side:>12}: {seconds * 1000:7.0f} ms", flush=True)
            print()
            for case in CASES:
                line = "   ".join(
                    f"{side} {statistics.median(figures[(case, side)]) * 1000:6.0f} ms "
                    f"(min {min(figures[(case, side)]) * 1000:.0f}, "
                    f"max {max(figures[(case, side)]) * 1000:.0f})"
                    for side in sides
                )
                print(f"{case:8} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
