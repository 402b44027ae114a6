"""`make dashboard`: the demo's Kafka, worker and jobs, then the dashboard on them.

Starts a single Kafka node, a `dramatiq examples.basic.tasks` worker, enqueues the example
jobs, and serves the dashboard of their queues, printing its address, until Ctrl-C (or
DASHBOARD_SECONDS seconds, when set).  It is read-only unless $DRAMATIQ_KAFKA_WEB_TOKEN is
set: then replaying and resolving the demo's dead letter need that token.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dramatiq_kafka import localkafka

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("DASHBOARD_PORT", "8080"))


def main() -> int:
    with localkafka.start_single() as cluster:
        env = {**os.environ, "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}
        os.environ.update(env)
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "examples.basic.tasks", "--processes", "1", "--threads", "4"],
            cwd=ROOT,
            env=env,
        )
        try:
            subprocess.run([sys.executable, "-m", "examples.basic.enqueue"], cwd=ROOT, env=env, check=True)
            sys.path.insert(0, str(ROOT))
            from dramatiq_kafka.web import TOKEN_ENV, serve
            from examples.basic.tasks import broker

            token = os.environ.get(TOKEN_ENV) or None
            threading.Thread(
                target=serve, args=(broker, "127.0.0.1", PORT), kwargs={"token": token}, daemon=True
            ).start()
            mode = (
                "replay and resolve need the token" if token else f"read-only; set ${TOKEN_ENV} for actions"
            )
            print(
                f"Dashboard of the demo's queues: http://127.0.0.1:{PORT}/ ({mode}; Ctrl-C stops)", flush=True
            )
            seconds = float(os.environ.get("DASHBOARD_SECONDS", "inf"))
            try:
                time.sleep(seconds) if seconds != float("inf") else threading.Event().wait()
            except KeyboardInterrupt:
                pass
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(60)
    return code


if __name__ == "__main__":
    sys.exit(main())
