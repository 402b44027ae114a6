"""Enqueue jobs, then read the worker's metrics: ``python -m examples.metrics.enqueue``."""

from __future__ import annotations

import os
import sys
import time
import urllib.request

from .tasks import broker, flaky, greet

URL = f"http://127.0.0.1:{os.environ.get('dramatiq_prom_port', '9191')}/metrics"

#: What the worker must report once the jobs are done (lag: one line per partition).
EXPECTED = {
    'dramatiq_messages_total{actor_name="greet",queue_name="metrics"}': 3.0,
    'dramatiq_kafka_retries_total{queue_name="metrics"}': 1.0,
    'dramatiq_kafka_dead_letters_total{queue_name="metrics",topic="metrics.XQ"}': 1.0,
    'dramatiq_kafka_consumer_lag{partition="0",queue_name="metrics"}': 0.0,
}


def scrape() -> dict[str, float]:
    with urllib.request.urlopen(URL, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(("dramatiq_messages_total", "dramatiq_kafka_")):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def main() -> None:
    for name in ("ada", "bob", "cy"):
        greet.send(name)
    flaky.send()
    broker.join("metrics", timeout=60_000, fail_fast=False)
    deadline = time.monotonic() + 30
    while True:
        samples = scrape()
        if all(samples.get(name) == value for name, value in EXPECTED.items()):
            break
        if time.monotonic() > deadline:
            sys.exit(f"The worker's metrics at {URL} are not as expected: {samples}")
        time.sleep(0.5)  # lag is read every second
    for name, value in sorted(samples.items()):
        print(f"{name} {value:g}")
    broker.close()


if __name__ == "__main__":
    main()
