"""Side-by-side figures: our KafkaBroker, raw confluent-kafka, Dramatiq's
StubBroker, RedisBroker and RabbitmqBroker, and dramatiq-kafka 0.1.9.

    make bench                                  # everything, results in docs/
    .venv/bin/python benchmarks/bench.py --only kafka,stub --tiny --out DIR

Sets up what it needs: a local Kafka (``scripts/localkafka.py``, unless
``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` is set), Debian's ``redis-server`` and
``rabbitmq-server`` (installed with apt-get when missing) on free loopback
ports, and dramatiq-kafka 0.1.9 in ``.bench/venv-0.1.9``.  Every
measurement runs in a fresh child process (``cases.py``); each figure is the
median of ``--rounds`` rounds, and each ratio the median of the per-round
ratios, both sides measured back to back in the same round.

Writes the table, the conditions and a plot to ``OUT/performance.md``
(between the ``bench`` markers, keeping the hand-written notes) and
``OUT/performance.png``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import services  # noqa: E402

from dramatiq_kafka import localkafka  # noqa: E402

CASES = HERE / "cases.py"
SYSTEMS = ("kafka", "stub", "redis", "rabbitmq", "legacy")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

#: The issue's targets: (figure, comparison, at least).
TARGETS = {
    "async/stub": 0.8,
    "async/redis": 5.0,
    "e2e/rabbitmq": 1.5,
    "e2e/stub": 0.7,
    "procs2/procs1": 1.7,
}


@dataclass
class Settings:
    jobs: int = 20_000
    sync_jobs: int = 2_000
    rounds: int = 3
    legacy_rounds: int = 1
    backlog: int = 200_000
    rss_window: float = 10.0
    latency_rate: int = 500
    latency_seconds: float = 8.0
    latency_warmup: float = 4.0
    threads: int = 8
    partitions: int = 12
    stall: float = 30.0


@dataclass
class Results:
    """Per-round values of each figure, and the errors of failed measurements."""

    values: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: float | None) -> None:
        """Record a round's value; ``None`` (a failed measurement) keeps the rounds aligned."""
        self.values.setdefault(name, []).append(math.nan if value is None else value)

    def valid(self, name: str) -> list[float]:
        return [v for v in self.values.get(name, []) if not math.isnan(v)]

    def median(self, name: str) -> float | None:
        values = self.valid(name)
        return statistics.median(values) if values else None

    def ratio(self, a: str, b: str) -> float | None:
        """The median of per-round ratios a/b (both measured in the same round)."""
        pairs = [
            x / y
            for x, y in zip(self.values.get(a, []), self.values.get(b, []), strict=False)
            if y and not math.isnan(x) and not math.isnan(y)
        ]
        return statistics.median(pairs) if pairs else None


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- running children ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, settings: Settings, systems: set[str], workdir: Path) -> None:
        self.s = settings
        self.systems = systems
        self.workdir = workdir
        self.results = Results()
        self.endpoints: dict[str, str] = {}
        self.legacy_python: Path | None = None

    def spec(self, case: str, system: str, **extra: Any) -> dict[str, Any]:
        return {
            "case": case,
            "system": system,
            "queue": f"bench-{uuid.uuid4().hex[:10]}",
            "jobs": self.s.jobs,
            "threads": self.s.threads,
            "partitions": self.s.partitions,
            "stall": self.s.stall,
            **self.endpoints,
            **extra,
        }

    def child(self, spec: dict[str, Any], python: Path | None = None, timeout: float = 900) -> dict[str, Any]:
        command = [str(python or sys.executable), str(CASES), json.dumps(spec)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.workdir)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
        raise RuntimeError(
            f"{spec['case']}/{spec['system']} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )

    def measure(self, name: str, spec: dict[str, Any], key: str = "rate", **kw: Any) -> dict[str, Any] | None:
        try:
            result = self.child(spec, **kw)
        except Exception as e:
            log(f"{name} failed: {e}")
            self.results.errors[name] = str(e).splitlines()[0]
            self.results.add(name, None)
            return None
        self.results.add(name, result.get(key))
        if name.startswith("enqueue/"):
            self.results.add(f"{name}/cpu", result.get("cpu_us"))
        log(f"{name}: {result.get(key):.1f}" if isinstance(result.get(key), float) else f"{name}: {result}")
        return result

    # -- worker processes ----------------------------------------------------------------------------

    def workers(
        self,
        spec: dict[str, Any],
        processes: int,
        *,
        python: Path | None = None,
        window: float | None = None,
        fill_after_join: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Run ``processes`` worker children on a filled queue until every
        job ran (or nothing ran for ``stall`` s, or ``window`` s after the
        first job); return the combined tally and the peak RSS.

        With ``fill_after_join``, that range of jobs is enqueued once the
        workers' group is stable (for consumers that start at the log's end).
        """
        jobs = spec["jobs"]
        procs = []
        for n in range(processes):
            stats = self.workdir / f"stats-{spec['queue']}-{n}.json"
            child_spec = {**spec, "case": "worker", "stats": str(stats)}
            command = [str(python or sys.executable), str(CASES), json.dumps(child_spec)]
            proc = subprocess.Popen(
                command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=open(f"{stats}.err", "w")
            )
            procs.append((proc, stats))
        if fill_after_join is not None:
            wait_group_stable(spec["kafka"], f"group-{spec['queue']}", timeout=60)
            start, end = fill_after_join
            self.child({**spec, "case": "fill", "system": "kafka", "start": start, "end": end})
        peak_rss = 0
        seen, since = -1, time.monotonic()
        started = time.monotonic()
        try:
            while True:
                time.sleep(0.1)
                tallies = [read_json(stats) for _, stats in procs]
                for proc, _ in procs:
                    peak_rss = max(peak_rss, rss_bytes(proc.pid))
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"worker exited {proc.returncode}: {tail_file(f'{procs[0][1]}.err')}"
                        )
                executed = sum(t.get("executed", 0) for t in tallies)
                distinct = sum(t.get("distinct", 0) for t in tallies)
                firsts = [t["first"] for t in tallies if t.get("executed")]
                if distinct >= jobs:
                    break
                if window is not None and firsts and time.time() - min(firsts) >= window:
                    break
                if executed != seen:
                    seen, since = executed, time.monotonic()
                elif time.monotonic() - since > spec["stall"] and time.monotonic() - started > 60:
                    break
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finals = [read_json(stats) for _, stats in procs]
        counts = [0] * jobs
        for final in finals:
            raw = base64.b64decode(final.get("counts", "")) if final.get("counts") else b""
            for i, c in enumerate(raw):
                counts[i] += c
        firsts = [f["first"] for f in finals if f.get("executed")]
        lasts = [f["last"] for f in finals if f.get("executed")]
        distinct = sum(1 for c in counts if c)
        span = max(lasts) - min(firsts) if firsts else 0.0
        pre = fill_after_join[0] if fill_after_join is not None else 0
        return {
            "rate": distinct / span if span > 0 else 0.0,
            "distinct": distinct,
            "executed": sum(f.get("executed", 0) for f in finals),
            "backlog": pre,
            "lost_backlog": counts[:pre].count(0),
            "lost": counts[pre:].count(0),
            "duplicated": sum(c - 1 for c in counts if c > 1),
            "rss_mb": peak_rss / 2**20,
        }

    def measure_workers(
        self, name: str, spec: dict[str, Any], processes: int, key: str = "rate", **kw: Any
    ) -> dict[str, Any] | None:
        try:
            self.child({**spec, "case": "fill", "system": "kafka", "end": spec.get("backlog", spec["jobs"])})
            result = self.workers(spec, processes, **kw)
        except Exception as e:
            log(f"{name} failed: {e}")
            self.results.errors[name] = str(e).splitlines()[0]
            self.results.add(name, None)
            return None
        self.results.add(name, result[key])
        log(f"{name}: {result}")
        return result

    # -- the rounds ----------------------------------------------------------------------------------

    def run(self) -> None:
        s, has = self.s, self.systems.__contains__
        for round_no in range(1, s.rounds + 1):
            log(f"round {round_no}/{s.rounds}")
            enqueue = []
            if has("kafka"):
                enqueue += [
                    ("enqueue/async", "kafka-async"),
                    ("enqueue/raw", "raw"),
                    ("enqueue/bulk", "kafka-bulk"),
                ]
                enqueue += [("enqueue/sync", "kafka-sync")]
            enqueue += [(f"enqueue/{x}", x) for x in ("stub", "redis", "rabbitmq") if has(x)]
            for name, system in enqueue:
                jobs = s.sync_jobs if system == "kafka-sync" else s.jobs
                self.measure(name, self.spec("enqueue", system, jobs=jobs))
            for system in ("kafka", "stub", "redis", "rabbitmq"):
                if has(system):
                    self.measure(f"e2e/{system}", self.spec("e2e", system))
            if has("kafka"):
                latency = dict(rate=s.latency_rate, seconds=s.latency_seconds, warmup=s.latency_warmup)
                result = self.measure(
                    "latency/kafka/p50", self.spec("latency", "kafka", **latency), key="p50"
                )
                self.results.add("latency/kafka/p99", result["p99"] if result else None)
                for processes in (1, 2):
                    self.measure_workers(f"procs{processes}", self.spec("worker", "kafka"), processes)
            for system in ("rabbitmq", "redis"):
                if has(system):
                    latency = dict(rate=s.latency_rate, seconds=s.latency_seconds, warmup=s.latency_warmup)
                    result = self.measure(
                        f"latency/{system}/p50", self.spec("latency", system, **latency), key="p50"
                    )
                    self.results.add(f"latency/{system}/p99", result["p99"] if result else None)
        if has("legacy") and self.legacy_python is not None:
            for _ in range(s.legacy_rounds):
                # kafka-python starts a new group at the log's end: the jobs
                # enqueued before the first worker joined are counted apart.
                pre = min(1000, s.jobs // 10)
                spec = self.spec("worker", "legacy", backlog=pre, stall=15.0)
                result = self.measure_workers(
                    "e2e/legacy", spec, 1, python=self.legacy_python, fill_after_join=(pre, s.jobs)
                )
                if result:
                    self.results.extra.setdefault("legacy", []).append(result)
        if has("kafka"):
            for factor in (1, 2):
                jobs = s.backlog * factor
                spec = self.spec("worker", "kafka", jobs=jobs)
                self.measure_workers(f"rss/{factor}", spec, 1, key="rss_mb", window=s.rss_window)


def wait_group_stable(bootstrap: str, group: str, timeout: float) -> None:
    """Until every member of ``group`` has partitions assigned."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            description = admin.describe_consumer_groups([group])[group].result(10)
            members = description.members
            if (
                description.state == ConsumerGroupState.STABLE
                and members
                and all(m.assignment.topic_partitions for m in members)
            ):
                time.sleep(2)  # the members' first fetch positions
                return
        except Exception:  # the group does not exist yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"group {group} not stable after {timeout:.0f}s")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def tail_file(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- services ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_services(bench: Bench) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if bench.systems & {"kafka", "legacy"}:
            bootstrap = os.environ.get("DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS")
            if not bootstrap:
                # The first rebalance of a new group waits this long for more
                # members, so that two worker processes started together share
                # the partitions from their first job on.
                localkafka.SINGLE_NODE_PROPERTIES["group.initial.rebalance.delay.ms"] = "3000"
                log("starting Kafka")
                cluster = localkafka.start_single(bench.workdir / "kafka")
                stack.callback(cluster.stop)
                bootstrap = cluster.bootstrap_servers
            bench.endpoints["kafka"] = bootstrap
        if "redis" in bench.systems:
            log("starting redis-server")
            server, url = services.start_redis(bench.workdir)
            stack.callback(server.stop)
            bench.endpoints["redis"] = url
        if "rabbitmq" in bench.systems:
            log("starting rabbitmq-server")
            server, url = services.start_rabbitmq(bench.workdir)
            stack.callback(server.stop)
            bench.endpoints["rabbitmq"] = url
        if "legacy" in bench.systems:
            import dramatiq

            bench.legacy_python = services.legacy_python(ROOT / ".bench", dramatiq.__version__)
        yield


# -- reporting -----------------------------------------------------------------------------------------


def conditions(bench: Bench, load: tuple[float, float, float], elapsed: float) -> list[str]:
    import confluent_kafka
    import dramatiq
    import orjson

    def command_output(*command: str) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    s = bench.s
    lines = [
        f"- Machine: {os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}; "
        f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(the machine is shared: other processes run beside the benchmark).",
        f"- Python {platform.python_version()}, Dramatiq {dramatiq.__version__}, "
        f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]}), "
        f"orjson {orjson.__version__}.",
        f"- Kafka {localkafka.KAFKA_VERSION}, one KRaft node from `scripts/localkafka.py` "
        f"(JVM flags {' '.join(localkafka.JVM_FLAGS)}), on the same machine.",
    ]
    if "redis" in bench.systems:
        lines.append(
            f"- {command_output('redis-server', '--version').split(' sha=')[0]} (Debian), no persistence."
        )
    if "rabbitmq" in bench.systems:
        version = command_output("dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server")
        lines.append(f"- RabbitMQ {version} (Debian), `RabbitmqBroker` defaults (no publisher confirms).")
    if "legacy" in bench.systems:
        lines.append("- dramatiq-kafka 0.1.9 (kafka-python 2.0.2) in its own virtualenv, same Dramatiq.")
    lines += [
        f"- Settings: {s.rounds} rounds (0.1.9: {s.legacy_rounds}), median reported; {s.jobs:,} jobs "
        f"(sync enqueue: {s.sync_jobs:,}); one worker process x {s.threads} threads "
        f"(`Worker(worker_threads={s.threads})`, Dramatiq's default prefetch); a {s.partitions}-partition "
        "topic; each broker with its defaults.",
        "- Enqueue: `actor.send(i)` in a loop (bulk: one `broker.enqueue_many`), timed until the "
        "producer is flushed (Kafka) or the last call returned; raw: `Producer.produce` of the very "
        "values and headers our broker writes, same librdkafka settings.",
        "- End to end: the jobs are enqueued first; jobs/s counts from the first job's start to the last "
        "job's start (group join and shutdown excluded), in the same worker process for one process, "
        "across processes for two.",
        f"- Latency: {s.latency_rate} jobs/s paced for {s.latency_seconds:g} s after {s.latency_warmup:g} s "
        "at that pace not counted (a new worker's group settles first), sender and worker in one "
        "process, from `send()` to the job's first line.",
        f"- RSS: peak resident size of one worker process over its first {s.rss_window:g} s of "
        f"consuming a backlog of {s.backlog:,} and {2 * s.backlog:,} jobs.",
        f"- The whole run took {elapsed / 60:.1f} min.",
    ]
    return lines


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(bench: Bench) -> list[str]:
    r, s = bench.results, bench.s

    def row(label: str, name: str, note: str = "", digits: int = 0) -> str:
        values = r.valid(name)
        spread = f"{min(values):,.{digits}f}-{max(values):,.{digits}f}" if len(values) > 1 else ""
        error = r.errors.get(name)
        if error and not values:
            note = f"failed: {error[:60]}"
        return f"| {label} | {fmt(r.median(name), digits)} | {spread} | {note} |"

    def ratio(a: str, b: str, target: float | None = None) -> str:
        value = r.ratio(a, b)
        if value is None:
            return ""
        text = f"{value:.2f}x"
        if target is not None:
            text += f" (target ≥ {target:g}: {'met' if value >= target else 'NOT met'})"
        return text

    ours_cpu, stub_cpu = r.median("enqueue/async/cpu"), r.median("enqueue/stub/cpu")
    cpu_note = ""
    if ours_cpu is not None and stub_cpu is not None:
        cpu_note = (
            f"; CPU per send (the whole process, librdkafka's threads included): {ours_cpu:.0f} µs, "
            f"StubBroker {stub_cpu:.0f} µs"
        )
    legacy = r.extra.get("legacy", [])
    legacy_note = ""
    if legacy:
        last = legacy[-1]
        legacy_note = (
            f"of {last['backlog']:,} jobs enqueued before its first worker joined, "
            f"{last['lost_backlog']:,} never ran; of the {s.jobs - last['backlog']:,} enqueued after, "
            f"{last['lost']:,} lost and {last['duplicated']:,} duplicated"
        )
    lines = [
        "| Figure | Median | Rounds (min-max) | Ratio measured in the same rounds |",
        "|---|---:|---:|---|",
        "| **Enqueue, msgs/s** | | | |",
        row(
            "ours, async (`send`)",
            "enqueue/async",
            "vs StubBroker "
            + ratio("enqueue/async", "enqueue/stub", 0.8)
            + "; vs Redis "
            + ratio("enqueue/async", "enqueue/redis", 5.0)
            + cpu_note,
        ),
        row("ours, sync", "enqueue/sync"),
        row("ours, bulk (`enqueue_many`)", "enqueue/bulk", "vs raw " + ratio("enqueue/bulk", "enqueue/raw")),
        row(
            "raw confluent-kafka `produce` (ceiling)",
            "enqueue/raw",
            "async vs raw " + ratio("enqueue/async", "enqueue/raw"),
        ),
        row("StubBroker", "enqueue/stub"),
        row("RedisBroker", "enqueue/redis"),
        row("RabbitmqBroker", "enqueue/rabbitmq"),
        f"| **End to end, jobs/s** ({s.jobs:,} jobs, 1 process x {s.threads} threads, "
        f"{s.partitions} partitions) | | | |",
        row(
            "ours",
            "e2e/kafka",
            "vs RabbitMQ "
            + ratio("e2e/kafka", "e2e/rabbitmq", 1.5)
            + "; vs StubBroker "
            + ratio("e2e/kafka", "e2e/stub", 0.7),
        ),
        row("StubBroker (Dramatiq's worker ceiling)", "e2e/stub"),
        row("RedisBroker", "e2e/redis", "ours vs Redis " + ratio("e2e/kafka", "e2e/redis")),
        row("RabbitmqBroker", "e2e/rabbitmq"),
        row("dramatiq-kafka 0.1.9", "e2e/legacy", legacy_note),
        f"| **Latency send → start, ms** (paced {s.latency_rate}/s) | | | |",
        row("ours p50", "latency/kafka/p50", "target ≤ 3 ms", 2),
        row("ours p99", "latency/kafka/p99", "target ≤ 15 ms", 2),
        row("RabbitmqBroker p50", "latency/rabbitmq/p50", "", 2),
        row("RabbitmqBroker p99", "latency/rabbitmq/p99", "", 2),
        row("RedisBroker p50", "latency/redis/p50", "", 2),
        row("RedisBroker p99", "latency/redis/p99", "", 2),
        "| **Worker RSS, MB** | | | |",
        row(f"backlog {s.backlog:,}", "rss/1", "target ≤ 250 MB"),
        row(f"backlog {2 * s.backlog:,}", "rss/2", "vs the smaller backlog " + ratio("rss/2", "rss/1")),
        "| **Worker processes (ours), jobs/s** | | | |",
        row("1 process x 8 threads", "procs1"),
        row("2 processes x 8 threads", "procs2", "vs 1 process " + ratio("procs2", "procs1", 1.7)),
    ]
    return lines


def plot(bench: Bench, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = bench.results
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.5))

    def bars(ax: Any, title: str, items: list[tuple[str, str]], unit: str, ours: set[str]) -> None:
        present = [(label, r.median(name)) for label, name in items if r.median(name) is not None]
        labels = [label for label, _ in present]
        values = [value for _, value in present]
        colors = ["tab:orange" if label in ours else "tab:gray" for label in labels]
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        for i, value in enumerate(values[::-1]):
            ax.text(value, i, f" {value:,.0f}" if value >= 10 else f" {value:.2f}", va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(unit)
        ax.margins(x=0.25)

    bars(
        axes[0],
        "Enqueue",
        [
            ("ours async", "enqueue/async"),
            ("ours bulk", "enqueue/bulk"),
            ("ours sync", "enqueue/sync"),
            ("raw produce", "enqueue/raw"),
            ("StubBroker", "enqueue/stub"),
            ("Redis", "enqueue/redis"),
            ("RabbitMQ", "enqueue/rabbitmq"),
        ],
        "messages/s",
        {"ours async", "ours bulk", "ours sync"},
    )
    bars(
        axes[1],
        "End to end, 1 process x 8 threads",
        [
            ("ours", "e2e/kafka"),
            ("StubBroker", "e2e/stub"),
            ("Redis", "e2e/redis"),
            ("RabbitMQ", "e2e/rabbitmq"),
            ("0.1.9", "e2e/legacy"),
            ("ours, 2 processes", "procs2"),
        ],
        "jobs/s",
        {"ours", "ours, 2 processes"},
    )
    bars(
        axes[2],
        f"Latency at {bench.s.latency_rate} jobs/s",
        [
            ("ours p50", "latency/kafka/p50"),
            ("ours p99", "latency/kafka/p99"),
            ("RabbitMQ p50", "latency/rabbitmq/p50"),
            ("RabbitMQ p99", "latency/rabbitmq/p99"),
            ("Redis p50", "latency/redis/p50"),
            ("Redis p99", "latency/redis/p99"),
        ],
        "ms",
        {"ours p50", "ours p99"},
    )
    bars(
        axes[3],
        "Worker RSS under a backlog",
        [(f"{bench.s.backlog:,} jobs", "rss/1"), (f"{2 * bench.s.backlog:,} jobs", "rss/2")],
        "MB",
        {f"{bench.s.backlog:,} jobs", f"{2 * bench.s.backlog:,} jobs"},
    )
    for ax, limits in ((axes[2], (3, 15)), (axes[3], (250,))):
        for limit in limits:
            ax.axvline(limit, color="tab:red", linestyle="--", linewidth=1)
            ax.text(limit, ax.get_ylim()[1], f" target {limit:g}", color="tab:red", fontsize=7, va="top")
    fig.suptitle(
        "dramatiq-kafka (orange) beside the alternatives — medians; the machine is shared, see conditions"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(bench: Bench, out: Path, lines: list[str]) -> None:
    doc = out / "performance.md"
    generated = "\n".join([BEGIN, *lines, END])
    if doc.exists() and BEGIN in doc.read_text():
        text = doc.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1] if END in rest else ""
        doc.write_text(head + generated + tail)
    else:
        doc.write_text(f"# Performance\n\n{generated}\n")
    plot(bench, out / "performance.png")
    log(f"wrote {doc} and {out / 'performance.png'}")


def parse_args(argv: list[str] | None) -> tuple[Settings, set[str], Path, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}"
    )
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--jobs", type=int, default=Settings.jobs)
    parser.add_argument("--backlog", type=int, default=Settings.backlog)
    parser.add_argument(
        "--tiny", action="store_true", help="a few hundred jobs, one round: checks the script runs"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where performance.md and .png go")
    parser.add_argument("--json", type=Path, help="also write every round's values here")
    args = parser.parse_args(argv)
    systems = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = systems - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")
    settings = Settings(rounds=args.rounds, jobs=args.jobs, backlog=args.backlog)
    if args.tiny:
        settings = Settings(
            jobs=300,
            sync_jobs=50,
            rounds=1,
            backlog=1_000,
            rss_window=1.0,
            latency_rate=100,
            latency_seconds=0.5,
            latency_warmup=0.2,
            stall=10.0,
        )
    return settings, systems, args.out, args.json


def main(argv: list[str] | None = None) -> int:
    settings, systems, out, json_path = parse_args(argv)
    started, load = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dramatiq-kafka-bench-") as tmp:
        bench = Bench(settings, systems, Path(tmp))
        with running_services(bench):
            bench.run()
    lines = table(bench)
    print("\n".join(lines))
    report = [
        "## Results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `make bench`.",
        "",
        *lines,
        "",
        "![Benchmark results](performance.png)",
        "",
        "## Conditions",
        "",
        *conditions(bench, load, time.monotonic() - started),
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_report(bench, out, report)
    if json_path is not None:
        r = bench.results
        json_path.write_text(json.dumps({"values": r.values, "extra": r.extra, "errors": r.errors}, indent=1))
    if bench.results.errors:
        log(f"failed: {', '.join(sorted(bench.results.errors))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
