"""Enqueue the example jobs and wait until the workers have committed them all."""

from __future__ import annotations

from .tasks import add, broker, divide


def main() -> None:
    for i in range(10):
        add.send(i, i * 10)
    divide.send(10, 2)  # sync: returns once Kafka has the record
    divide.send(1, 0)  # fails: ends in the dead-letter topic basic.XQ
    broker.join("basic", timeout=60_000, fail_fast=False)
    print("All 12 jobs are done and committed; divide(1, 0) is in the topic 'basic.XQ'.")
    broker.close()


if __name__ == "__main__":
    main()
