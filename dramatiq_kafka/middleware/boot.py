"""Fail a worker at boot when Kafka cannot be reached."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware


class BootCheck(Middleware):
    """Checks, before a worker starts its threads, that Kafka answers.

    Without it a worker pointed at the wrong address would start, log a
    connection error every second and never exit.  The error names the
    bootstrap servers and makes ``dramatiq`` exit with code 3.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        admin = getattr(broker, "admin", None)
        if admin is not None:
            admin.topic_names()
