"""The dashboard in a real headless Chromium (Debian's `chromium`), against a real Kafka and worker."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading

import dramatiq
import pytest
from dramatiq import Worker

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.web import make_app

from .helpers import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str) -> str:
    """The page's DOM after Chromium loaded it."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_chromium_shows_what_kafka_says(kafka_bootstrap: str, unique_name: str) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        status_interval=0.5,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work", max_retries=5, min_backoff=60_000, max_backoff=60_000)
    def fails() -> None:
        raise ValueError("no")

    fails.send()
    broker.flush_producer()

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = make_server("127.0.0.1", port, make_app(broker, cache_seconds=0), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: "waits for retry 1" in browse(f"{base}/queue/work"), 60, 1)
        overview = browse(f"{base}/")
        lags = broker.admin.lag(f"{prefix}work")
        row = re.search(r'<a href="/queue/work">work</a></td>(.*?)</tr>', overview)
        assert row is not None
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[:4] == [
            str(len(lags)),
            str(sum(p.end for p in lags)),
            str(sum(p.lag for p in lags)),
            "1",
        ]
        assert "work/" in browse(f"{base}/workers")
    finally:
        worker.stop()
        server.shutdown()
        broker.close()
