"""Fail a worker at boot when Kafka cannot be reached, or when it runs under gevent."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from dramatiq.threading import is_gevent_active

from ..errors import ConfigurationError

#: Why a gevent process is refused (see docs/migration.md).
GEVENT_UNSUPPORTED = (
    "KafkaBroker does not run under gevent (dramatiq-gevent, or a monkey-patched app): "
    "librdkafka's own threads cannot wake gevent's greenlets and its polls block the one thread "
    "they share, so a worker would never become ready nor stop on SIGTERM, and a send would "
    "block forever. Run the threaded worker, `dramatiq` (async def actors with Dramatiq's "
    "AsyncIO middleware cover I/O-bound jobs), and send from a process that is not monkey-patched."
)


def check_not_gevent() -> None:
    """Raise :data:`GEVENT_UNSUPPORTED` as a ``ConfigurationError`` in a gevent process."""
    if is_gevent_active():
        raise ConfigurationError(GEVENT_UNSUPPORTED)


class BootCheck(Middleware):
    """Checks, before a worker starts its threads, that Kafka answers.

    Without it a worker pointed at the wrong address would start, log a
    connection error every second and never exit.  The error names the
    bootstrap servers and makes ``dramatiq`` exit with code 3.  A
    ``dramatiq-gevent`` worker exits the same way, saying why.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Also here: the process may have been patched after the broker was made.
        check_not_gevent()
        admin = getattr(broker, "admin", None)
        if admin is not None:
            admin.topic_names()
