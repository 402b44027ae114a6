"""End-to-end jobs/s of a queue consumed through a share group against the consumer group.

    .venv/bin/python benchmarks/share_groups.py [--jobs 4000] [--rounds 3] [--sleep 0.005]
        [--cases 1x1,1x2,1x4,12x1,12x2] [--plot docs/share-groups.png]

A case ``PxN`` is a queue of P partitions drained by N worker processes (a ``dramatiq``
``Worker`` of 8 threads each, forked from here), once in each mode, back to back in the
same round: ``group`` (today's consumer group) and ``share`` (``QueueConfig(share_group=True)``).
The job sleeps ``--sleep`` seconds (I/O-bound work, as most jobs are: with no-op jobs two
cores bound every case alike).  Each run warms up (every process has joined and run jobs),
then sends ``--jobs`` jobs at once and measures from the first send to the last job done.
Figures are medians over the rounds; each ratio the median of the per-round ratios.  Runs on
a local Kafka started for the run unless ``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` is set.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
THREADS = 8
MODES = ("group", "share")


def make_broker(bootstrap: str, name: str, partitions: int, mode: str) -> Any:
    from dramatiq_kafka import KafkaBroker, QueueConfig

    return KafkaBroker(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{name}",
        topic_prefix=f"{name}.",
        queues={"jobs": QueueConfig(partitions=partitions, share_group=mode == "share", dead_letter=None)},
        status_interval=None,
    )


def worker_process(spec: dict[str, Any], done: Any, stop: Any) -> None:
    import dramatiq
    from dramatiq import Worker

    broker = make_broker(spec["bootstrap"], spec["name"], spec["partitions"], spec["mode"])
    dramatiq.set_broker(broker)
    sleep = spec["sleep"]

    @dramatiq.actor(queue_name="jobs", actor_name="job")
    def job(n: int) -> None:
        time.sleep(sleep)
        with done.get_lock():
            done.value += 1

    worker = Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    stop.wait()
    worker.stop()
    broker.close()


def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)


def run(bootstrap: str, partitions: int, processes: int, mode: str, jobs: int, sleep: float) -> float:
    """Jobs/s of one run: ``jobs`` sent at once to a warm fleet of ``processes``."""
    import dramatiq

    name = f"share-bench-{uuid.uuid4().hex[:8]}"
    sender = make_broker(bootstrap, name, partitions, mode)
    dramatiq.set_broker(sender)
    job = dramatiq.actor(lambda n: None, queue_name="jobs", actor_name="job")
    sender.declare_queue("jobs")
    sender.ensure_topics("jobs")
    context = multiprocessing.get_context("fork")
    done, stop = context.Value("i", 0), context.Event()
    spec = {"bootstrap": bootstrap, "name": name, "partitions": partitions, "mode": mode, "sleep": sleep}
    fleet = [context.Process(target=worker_process, args=(spec, done, stop)) for _ in range(processes)]
    for process in fleet:
        process.start()
    try:
        # Warm-up: every process joined (a share consumer's first fetch takes seconds) and ran jobs.
        time.sleep(8)
        warm = processes * THREADS * 4
        for n in range(warm):
            job.send(n)
        sender.flush_producer()
        wait_until(lambda: done.value >= warm, 120)
        time.sleep(1)
        with done.get_lock():
            done.value = 0
        started = time.perf_counter()
        for n in range(jobs):
            job.send(n)
        sender.flush_producer()
        wait_until(lambda: done.value >= jobs, 600)
        return jobs / (time.perf_counter() - started)
    finally:
        stop.set()
        for process in fleet:
            process.join(30)
            if process.is_alive():
                process.kill()
        sender.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.005)
    parser.add_argument("--cases", default="1x1,1x2,1x4,12x1,12x2")
    parser.add_argument("--plot", help="write a plot of jobs/s against processes")
    args = parser.parse_args(argv)
    from sides import kafka

    cases = [tuple(int(n) for n in case.split("x")) for case in args.cases.split(",")]
    rates: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="dramatiq-kafka-share-") as tmp, kafka(Path(tmp)) as bootstrap:
        for round_number in range(1, args.rounds + 1):
            for partitions, processes in cases:
                case = f"{partitions}x{processes}"
                for mode in MODES:
                    rate = run(bootstrap, partitions, processes, mode, args.jobs, args.sleep)
                    rates.setdefault(case, {}).setdefault(mode, []).append(rate)
                    print(f"round {round_number} {case} {mode}: {rate:,.0f} jobs/s", flush=True)
    figures = summary(rates)
    print(table(figures, args))
    print("RESULTS " + json.dumps(figures))
    if args.plot:
        plot(figures, Path(args.plot))
    return 0


def summary(rates: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    figures = {}
    for case, modes in rates.items():
        ratios = [share / group for group, share in zip(modes["group"], modes["share"], strict=True)]
        figures[case] = {
            "group": statistics.median(modes["group"]),
            "share": statistics.median(modes["share"]),
            "share/group": statistics.median(ratios),
        }
    return figures


def table(figures: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.jobs} jobs of {args.sleep * 1000:g} ms, {THREADS} threads per process, "
        f"median of {args.rounds} round(s)",
        "",
        "| partitions x processes | consumer group jobs/s | share group jobs/s | share / group |",
        "|---|---:|---:|---:|",
    ]
    for case, f in figures.items():
        partitions, processes = case.split("x")
        lines.append(
            f"| {partitions} x {processes} | {f['group']:,.0f} | {f['share']:,.0f} | {f['share/group']:.2f} |"
        )
    for mode in MODES:
        one, two = figures.get("1x1", {}).get(mode), figures.get("1x2", {}).get(mode)
        if one and two:
            lines.append(f"\n1 partition, {mode} mode, 2 processes / 1 process: {two / one:.2f}")
    return "\n".join(lines)


def plot(figures: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for partitions in sorted({int(case.split("x")[0]) for case in figures}):
        cases = sorted(
            (int(c.split("x")[1]), f) for c, f in figures.items() if int(c.split("x")[0]) == partitions
        )
        for mode, style, label in (("group", "--", "consumer group"), ("share", "-", "share group")):
            axis.plot(
                [n for n, _ in cases],
                [f[mode] for _, f in cases],
                style,
                marker="o",
                label=f"{partitions} partition(s), {label}",
            )
    axis.set_xlabel("worker processes (8 threads each)")
    axis.set_ylabel("jobs/s")
    axis.set_title("End to end, jobs of 5 ms")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
