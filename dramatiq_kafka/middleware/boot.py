"""A worker's boot: fail it when Kafka cannot be reached or it runs under gevent; get its
group member and producer ready."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.common import dq_name
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

    It also tells the process's group members which queues the worker will
    consume, sets up the share groups of its share queues (a refusal stops
    the worker), and starts the producer early.
    """

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # A worker process sends retries, dead letters and its jobs' messages: its
        # producer gets ready while the process joins its group (KafkaProducer.start).
        producer = getattr(broker, "producer", None)
        if producer is not None:
            producer.start()

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Also here: the process may have been patched after the broker was made.
        check_not_gevent()
        admin = getattr(broker, "admin", None)
        if admin is not None:
            admin.topic_names()
        members = getattr(broker, "group_members", None)
        if members is not None:
            # The worker asks for its queues' consumers one by one, from their own
            # threads: the process's group member subscribes once they all came.
            whitelist = getattr(worker, "consumer_whitelist", None) or set()
            queues = {q for q in broker.get_declared_queues() if not whitelist or q in whitelist}
            share_group_of = broker.share_group_of  # type: ignore[attr-defined]
            # A share queue's share group is set up now: a refusal stops the worker at once.
            for queue in queues:
                share_group = share_group_of(queue)
                if share_group is not None:
                    broker.share_groups.settings(share_group)  # type: ignore[attr-defined]
            grouped = {q for q in queues if share_group_of(q) is None}
            members.await_queues(grouped | {dq_name(q) for q in queues})
