"""Enqueue the Django example's jobs and wait until the workers have committed them all."""

from __future__ import annotations

from dramatiq_kafka import KafkaBroker

from .tasks import broker, count_signups, send_welcome


def main() -> None:
    assert isinstance(broker, KafkaBroker), broker
    for address in ("ada@example.org", "alan@example.org", "not-an-address"):
        send_welcome.send(address)
    count_signups.send(3)
    broker.join("emails", timeout=60_000, fail_fast=False)
    broker.join("default", timeout=60_000, fail_fast=False)
    print("4 jobs done and committed; 'not-an-address' is in the topic 'emails.dead'.")
    broker.close()


if __name__ == "__main__":
    main()
