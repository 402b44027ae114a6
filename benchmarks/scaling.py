"""What a worker process holds as its queues grow, and how fast a fleet of them settles.

    .venv/bin/python benchmarks/scaling.py [REF] [--queues 1,5,20,50] [--processes 8]
        [--fleet-queues 20] [--jobs 20000] [--rabbitmq] [--plot docs/scaling.png]

Every measurement runs in fresh interpreters, on a local Kafka started for the run (unless
``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` is set).  This checkout runs with each group protocol:
KIP-848's (``group.protocol=consumer``: a process's queues share one Kafka consumer) and the
classic one (a Kafka consumer per queue and per delay queue).  With REF (a commit, tag or
branch), the same measurements of that checkout (classic protocol) run beside, from a temporary
git worktree; with ``--rabbitmq``, Dramatiq's ``RabbitmqBroker`` on Debian's rabbitmq-server
too (installed when missing).

- ``idle``: one process, an in-process ``Worker`` with 8 threads consuming N queues, idle once
  its group is stable: its threads, TCP connections, file descriptors and RSS (from ``/proc``),
  and the members of its consumer group.
- ``fleet``: P processes of F queues each start at once, one job waiting in each queue: seconds
  until the first job is done, and until the group is stable (every member assigned, every
  partition owned, no rebalance for 3 s).
- ``throughput``: one process with 8 threads drains J jobs spread over F queues: jobs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Seconds without a change of the group before it counts as stable.
STABLE_FOR = 3.0


# -- in the measured process ----------------------------------------------------------------------


def process_figures() -> dict[str, float]:
    """Threads, TCP connections, file descriptors and RSS (MB) of this process."""
    fds = os.listdir("/proc/self/fd")
    sockets = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    tcp = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            next(lines)
            tcp += sum(1 for line in lines if line.split()[9] in sockets)
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "threads": len(os.listdir("/proc/self/task")),
        "connections": tcp,
        "fds": len(fds),
        "rss_mb": round(rss / 1024, 1),
    }


def make_broker(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=spec["url"])
    from dramatiq_kafka import KafkaBroker

    return KafkaBroker(
        bootstrap_servers=spec["kafka"],
        group_id=spec["group"],
        topic_prefix=spec["prefix"],
        consumer_config={"group.protocol": spec["protocol"]},
    )


def child(spec: dict[str, Any]) -> None:
    """Run a worker on ``spec["queues"]`` queues; talk to the parent on stdin/stdout."""
    import dramatiq
    from dramatiq import Worker

    broker = make_broker(spec)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    done: dict[str, Any] = {"count": 0, "first": None}

    def job() -> None:
        done["count"] += 1
        if done["count"] == 1:
            done["first"] = time.time()
            print(f"FIRST {time.time()}", flush=True)
        if done["count"] == spec.get("expect"):
            print(f"ALL {time.time()}", flush=True)

    for number in range(spec["queues"]):
        dramatiq.actor(job, actor_name=f"job{number}", queue_name=f"q{number}")
    worker = Worker(broker, worker_threads=8, worker_timeout=1000)
    worker.start()
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "measure":
            print("FIGURES " + json.dumps({**process_figures(), "first": done["first"]}), flush=True)
        elif line.strip() == "stop":
            break
    worker.stop()
    broker.close()


# -- in the parent --------------------------------------------------------------------------------


#: Where the measured processes' logs go (a failed run names the file).
LOGS = Path(tempfile.gettempdir()) / "dramatiq-kafka-scaling-logs"


class Child:
    def __init__(self, checkout: Path, spec: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        command = [sys.executable, str(HERE / "scaling.py"), "--child", json.dumps(spec)]
        LOGS.mkdir(exist_ok=True)
        self.log = LOGS / f"{uuid.uuid4().hex[:8]}.log"
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            cwd=checkout,
            env=env,
        )

    def expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"the child exited before {prefix!r}; its log: {self.log}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        try:
            self.send("stop")
            self.proc.wait(120)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def group_state(bootstrap: str, group: str, topics: set[str]) -> tuple[bool, int, tuple[Any, ...]]:
    """Whether ``group`` is stable with every partition of ``topics`` owned, its
    member count, and its assignment."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
        description = future.result()
        owned = tuple(
            sorted(
                (tp.topic, tp.partition, member.member_id)
                for member in description.members
                for tp in (member.assignment.topic_partitions if member.assignment else [])
            )
        )
        metadata = admin.list_topics(timeout=10).topics
        wanted = sum(len(metadata[t].partitions) for t in topics if t in metadata)
        covered = len({(t, p) for t, p, _ in owned if t in topics})
        stable = description.state == ConsumerGroupState.STABLE and covered == wanted > 0
        return stable, len(description.members), owned
    except Exception:
        return False, 0, ()


def wait_stable(bootstrap: str, group: str, topics: set[str], timeout: float = 180) -> tuple[float, int]:
    """Seconds until ``group`` is stable and stays so for ``STABLE_FOR``; its members."""
    started = time.monotonic()
    since, last = None, None
    while time.monotonic() - started < timeout:
        stable, members, owned = group_state(bootstrap, group, topics)
        now = time.monotonic()
        if stable and owned == last and since is not None:
            if now - since >= STABLE_FOR:
                return since - started, members
        elif stable:
            since, last = now, owned
        else:
            since, last = None, None
        time.sleep(0.1)
    raise RuntimeError(f"group {group!r} not stable within {timeout:.0f} s")


def spec_for(side: str, queues: int, servers: dict[str, str]) -> dict[str, Any]:
    name = uuid.uuid4().hex[:8]
    if side == "rabbitmq":
        return {"kind": "rabbitmq", "url": servers["rabbitmq"], "queues": queues, "prefix": ""}
    return {
        "kind": "kafka",
        "kafka": servers["kafka"],
        "group": f"scale-{name}",
        "prefix": f"scale-{name}.",
        "queues": queues,
        "protocol": "consumer" if side.endswith("KIP-848") else "classic",
    }


def topics_of(spec: dict[str, Any]) -> set[str]:
    return {f"{spec['prefix']}q{n}{suffix}" for n in range(spec["queues"]) for suffix in ("", ".DQ")}


def send_jobs(checkout: Path, spec: dict[str, Any], jobs: int) -> None:
    """Send ``jobs`` jobs spread over the queues of ``spec`` (from ``checkout``)."""
    code = (
        "import json, sys, dramatiq\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from scaling import make_broker\n"
        "spec = json.loads(sys.argv[1]); broker = make_broker(spec); dramatiq.set_broker(broker)\n"
        "actors = [dramatiq.actor(lambda: None, actor_name=f'job{n}', queue_name=f'q{n}')"
        " for n in range(spec['queues'])]\n"
        "for i in range(int(sys.argv[3])): actors[i % len(actors)].send()\n"
        "getattr(broker, 'flush_producer', lambda: None)(); broker.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec), str(HERE), str(jobs)],
        check=True,
        cwd=checkout,
        env=env,
        timeout=600,
    )


def idle(checkout: Path, side: str, queues: int, servers: dict[str, str]) -> dict[str, Any]:
    spec = spec_for(side, queues, servers)
    worker = Child(checkout, spec)
    try:
        worker.expect("READY")
        members: int | str = "n/a"
        if spec["kind"] == "kafka":
            _, members = wait_stable(servers["kafka"], spec["group"], topics_of(spec))
        else:
            time.sleep(STABLE_FOR)
        worker.send("measure")
        figures: dict[str, Any] = json.loads(worker.expect("FIGURES "))
        figures["members"] = members
        return figures
    finally:
        worker.stop()


def fleet(checkout: Path, side: str, processes: int, queues: int, servers: dict[str, str]) -> dict[str, Any]:
    spec = spec_for(side, queues, servers)
    send_jobs(checkout, spec, queues)  # one job waiting in each queue
    started = time.time()
    workers = [Child(checkout, spec) for _ in range(processes)]
    try:
        stable, members = wait_stable(servers["kafka"], spec["group"], topics_of(spec), timeout=300)
        firsts = []
        for worker in workers:
            worker.send("measure")
            first = json.loads(worker.expect("FIGURES "))["first"]
            if first is not None:
                firsts.append(first)
        return {
            "first_job_s": round(min(firsts) - started, 2) if firsts else None,
            "stable_s": round(stable, 2),
            "members": members,
        }
    finally:
        for worker in workers:
            worker.stop()


def throughput(checkout: Path, side: str, queues: int, jobs: int, servers: dict[str, str]) -> float:
    spec = {**spec_for(side, queues, servers), "expect": jobs}
    send_jobs(checkout, spec, jobs)
    worker = Child(checkout, spec)
    try:
        first = float(worker.expect("FIRST "))
        last = float(worker.expect("ALL "))
        return round(jobs / (last - first))
    finally:
        worker.stop()


def measure(
    args: argparse.Namespace,
    cases: list[str],
    counts: list[int],
    sides: dict[str, Path],
    kafka_sides: dict[str, Path],
    servers: dict[str, str],
    results: dict[str, Any],
) -> None:
    for queues in counts if "idle" in cases else []:
        for side, checkout in sides.items():
            figures = idle(checkout, side, queues, servers)
            results["idle"].setdefault(side, {})[queues] = figures
            print(f"idle {queues:3} queues {side:>14}: {figures}", flush=True)
    for side, checkout in kafka_sides.items() if "fleet" in cases else []:
        try:
            figures = fleet(checkout, side, args.processes, args.fleet_queues, servers)
        except (RuntimeError, BrokenPipeError) as e:
            # 1fffd3e's 320 members timed out on metadata and a process died at boot.
            figures = {"failed": str(e) or type(e).__name__}
        results["fleet"][side] = figures
        print(f"fleet {args.processes}x{args.fleet_queues} {side:>14}: {figures}", flush=True)
    for side, checkout in sides.items() if "throughput" in cases else []:
        rate = throughput(checkout, side, args.fleet_queues, args.jobs, servers)
        results["throughput"][side] = rate
        print(f"throughput {args.fleet_queues} queues {side:>14}: {rate} jobs/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", nargs="?", help="a commit to measure beside this checkout")
    parser.add_argument("--queues", default="1,5,20,50")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--fleet-queues", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rabbitmq", action="store_true")
    parser.add_argument("--cases", default="idle,fleet,throughput")
    parser.add_argument("--plot", help="write a plot of threads and connections against queues")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    sys.path.insert(0, str(ROOT))
    from sides import checkout, kafka

    counts = [int(n) for n in args.queues.split(",")]
    results: dict[str, Any] = {"idle": {}, "fleet": {}, "throughput": {}}
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory(prefix="dramatiq-kafka-scaling-") as tmp:
        with checkout(args.ref, Path(tmp)) as baseline, kafka(Path(tmp)) as bootstrap:
            # This checkout with each group protocol: its queues share one Kafka consumer
            # with KIP-848's, and have one each with the classic protocol.
            sides = {"this KIP-848": ROOT, "this classic": ROOT}
            if baseline is not None:
                sides[args.ref] = baseline
            kafka_sides = dict(sides)
            servers = {"kafka": bootstrap}
            rabbit = None
            try:
                if args.rabbitmq:
                    from services import start_rabbitmq

                    rabbit, servers["rabbitmq"] = start_rabbitmq(Path(tmp))
                    sides["rabbitmq"] = ROOT
                measure(args, cases, counts, sides, kafka_sides, servers, results)
            finally:
                if rabbit is not None:
                    rabbit.stop()
    print("RESULTS " + json.dumps(results))
    if args.plot and results["idle"]:
        plot(results, counts, Path(args.plot))
    return 0


def plot(results: dict[str, Any], counts: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in ((axes[0], "threads", "threads"), (axes[1], "connections", "TCP connections")):
        for side, figures in results["idle"].items():
            axis.plot(counts, [figures[n][key] for n in counts], marker="o", label=side)
        axis.set_xlabel("queues of one idle worker process (8 worker threads)")
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
