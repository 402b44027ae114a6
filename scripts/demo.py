"""`make demo`: a local Kafka, a real `dramatiq` worker, the basic example.

Starts a single Kafka node, runs `dramatiq examples.basic.tasks` as a
subprocess, enqueues the example jobs, waits until they are committed,
then stops the worker (SIGTERM) and Kafka.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dramatiq_kafka import localkafka

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    started = time.monotonic()
    print("Starting a local Kafka node...", flush=True)
    with localkafka.start_single() as cluster:
        print(f"Kafka is up at {cluster.bootstrap_servers} ({time.monotonic() - started:.1f}s).", flush=True)
        env = {**os.environ, "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "examples.basic.tasks", "--processes", "1", "--threads", "4"],
            cwd=ROOT,
            env=env,
        )
        try:
            subprocess.run([sys.executable, "-m", "examples.basic.enqueue"], cwd=ROOT, env=env, check=True)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(60)
        print(f"Worker stopped (exit code {code}); stopping Kafka.", flush=True)
    print(f"Demo finished in {time.monotonic() - started:.1f}s.")
    return code


if __name__ == "__main__":
    sys.exit(main())
