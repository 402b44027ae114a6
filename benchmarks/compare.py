"""This checkout against an earlier commit, side by side: end-to-end and enqueue rates.

    .venv/bin/python benchmarks/compare.py REF [--rounds 5] [--jobs 20000]

Checks REF (a commit, tag or branch) out into a temporary git worktree, starts a local Kafka
(unless ``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` is set), and runs the ``e2e`` and ``enqueue`` cases
of ``benchmarks/cases.py`` for both checkouts in alternating rounds, each in a fresh process with
that checkout first on ``PYTHONPATH``.  Prints each round, the medians, and the median of the
per-round ratios (this checkout / REF): a change to the consumer is judged by the ratio, which a
busy machine moves much less than the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
from dramatiq_kafka import localkafka  # noqa: E402

CASES = ("e2e", "enqueue")


def run_case(checkout: Path, spec: dict[str, Any]) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(HERE / "cases.py"), json.dumps(spec)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=checkout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(json.loads(line[len("RESULT ") :])["rate"])
    raise RuntimeError(f"{spec['case']} in {checkout} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dramatiq-kafka-compare-") as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(baseline), args.ref], cwd=ROOT, check=True
        )
        cluster = None
        try:
            bootstrap = os.environ.get("DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS")
            if not bootstrap:
                cluster = localkafka.start_single(Path(tmp) / "kafka")
                bootstrap = cluster.bootstrap_servers
            rates: dict[tuple[str, str], list[float]] = {}
            sides = {"this": ROOT, args.ref: baseline}
            for number in range(args.rounds + 1):  # round 0 warms Kafka up and is not counted
                for case in CASES:
                    # Alternate which side goes first, so neither always gets the warmer Kafka.
                    order = list(sides.items()) if number % 2 else list(sides.items())[::-1]
                    for side, checkout in order:
                        spec = {
                            "case": case,
                            "system": "kafka",
                            "kafka": bootstrap,
                            "queue": f"compare-{uuid.uuid4().hex[:10]}",
                            "jobs": args.jobs,
                            "threads": 8,
                            "partitions": 12,
                            "stall": 30.0,
                        }
                        rate = run_case(checkout, spec)
                        if number:
                            rates.setdefault((case, side), []).append(rate)
                        print(f"round {number} {case:8} {side:>12}: {rate:9,.0f}/s", flush=True)
            print()
            for case in CASES:
                this, base = rates[(case, "this")], rates[(case, args.ref)]
                ratio = statistics.median(a / b for a, b in zip(this, base, strict=True))
                print(
                    f"{case:8} this {statistics.median(this):9,.0f}/s   {args.ref} "
                    f"{statistics.median(base):9,.0f}/s   ratio {ratio:.3f} "
                    f"(per round {', '.join(f'{a / b:.2f}' for a, b in zip(this, base, strict=True))})"
                )
        finally:
            if cluster is not None:
                cluster.stop()
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
