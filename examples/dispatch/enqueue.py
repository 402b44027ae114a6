"""Enqueue the dispatch examples: ``python -m examples.dispatch.enqueue``."""

from __future__ import annotations

from dramatiq_kafka import send_many

from .tasks import broker, charge, fulfil, notify


def main() -> None:
    charge.send(1)  # sync
    for step in range(3):
        for customer in ("ada", "bob"):
            fulfil.send(customer, step)  # async, keyed
    send_many(notify, [(user_id,) for user_id in range(5)])  # bulk, sync
    broker.join("orders", timeout=60_000)
    print("All dispatch examples ran.")
    broker.close()


if __name__ == "__main__":
    main()
