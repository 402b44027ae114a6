"""Enqueue delayed jobs and wait until every one ran once due."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from .tasks import broker, flaky_webhook, remind


def main() -> None:
    for who, seconds in (("ada", 3.0), ("grace", 1.0), ("linus", 0.5)):
        remind.send_with_options(args=(who, time.time() + seconds), delay=int(seconds * 1000))
    due = datetime.now(UTC) + timedelta(seconds=2)
    remind.send_with_options(args=("ken", due.timestamp()), eta=due)  # an absolute time works too
    flaky_webhook.send("https://example.invalid/hook")
    broker.join("reminders", timeout=60_000, fail_fast=False)
    print("All reminders ran once due; flaky_webhook is in the topic 'reminders.XQ' after 2 retries.")
    broker.close()


if __name__ == "__main__":
    main()
