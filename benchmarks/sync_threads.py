"""Sync sends from many threads at once: does each wait only for its own acknowledgement?

    .venv/bin/python benchmarks/sync_threads.py [REF] [--rounds 3] [--sends 2000] [--threads 8]

Each round runs in a fresh interpreter per side, on a local Kafka started for the run (unless
``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` is set): ``--sends`` sync sends from one thread, then the
same number spread over ``--threads`` threads sending at once.  Printed: sends/s of each and
their ratio (the goal: at least 5 with 8 threads).  With REF, the same from that checkout, from a
temporary git worktree, in alternating order.
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


def child(spec: dict[str, Any]) -> dict[str, float]:
    import dramatiq

    from dramatiq_kafka import KafkaBroker

    name = uuid.uuid4().hex[:8]
    broker = KafkaBroker(
        bootstrap_servers=spec["kafka"],
        group_id=f"sync-{name}",
        topic_prefix=f"sync-{name}.",
        dispatch_method="sync",
        status_interval=None,
    )
    dramatiq.set_broker(broker)
    job = dramatiq.actor(lambda: None, actor_name="job", queue_name="jobs")
    for _ in range(50):  # topics, metadata, the producer id
        job.send()

    def send(count: int) -> None:
        for _ in range(count):
            job.send()

    sends, threads = spec["sends"], spec["threads"]
    started = time.perf_counter()
    send(sends)
    one = sends / (time.perf_counter() - started)
    workers = [threading.Thread(target=send, args=(sends // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    many = (sends // threads * threads) / (time.perf_counter() - started)
    broker.close()
    return {"one": one, "many": many}


def run_child(checkout: Path, spec: dict[str, Any]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(HERE / "sync_threads.py"), "--child", json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=checkout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"{checkout} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", nargs="?", help="a commit to measure beside this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    from sides import checkout, kafka

    with tempfile.TemporaryDirectory(prefix="dramatiq-kafka-sync-") as tmp:
        with checkout(args.ref, Path(tmp)) as baseline, kafka(Path(tmp)) as bootstrap:
            sides = {"this": ROOT} if baseline is None else {"this": ROOT, args.ref: baseline}
            figures: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
            spec = {"kafka": bootstrap, "sends": args.sends, "threads": args.threads}
            for number in range(args.rounds):
                order = list(sides.items()) if number % 2 else list(sides.items())[::-1]
                for side, tree in order:
                    result = run_child(tree, spec)
                    figures[side].append(result)
                    print(
                        f"round {number} {side:>10}: 1 thread {result['one']:7.0f}/s, "
                        f"{args.threads} threads {result['many']:7.0f}/s",
                        flush=True,
                    )
            print()
            for side, results in figures.items():
                one = statistics.median(r["one"] for r in results)
                many = statistics.median(r["many"] for r in results)
                print(
                    f"{side:>10}: sync sends/s, 1 thread {one:,.0f}; {args.threads} threads at once "
                    f"{many:,.0f}: {many / one:.1f}x"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
