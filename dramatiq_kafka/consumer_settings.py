"""The librdkafka settings of the workers' consumers, and making one.

The defaults every group member gets (the user's settings override them), the
ones of each group protocol, and :func:`new_client`, which adds the log and
error callbacks.  The member that uses the client is ``group.py``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer as ConfluentConsumer

from .client_errors import ClientErrors
from .client_log import with_log

__all__ = [
    "CLASSIC_GROUP_DEFAULTS",
    "CLIENT_ID_PREFIX",
    "CONSUMER_DEFAULTS",
    "CONSUMER_GROUP_DEFAULTS",
    "member_client_id",
    "new_client",
    "process_key",
]

#: What the default ``client.id`` of a worker's group member starts with.
CLIENT_ID_PREFIX = "dramatiq-kafka@"

#: Settings every worker consumer gets; the user's config may override them.
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # Bounds the records librdkafka keeps fetched ahead (default 64 MiB).
    "queued.max.messages.kbytes": 16384,
    # Per partition (default 100,000): the byte bound counts compressed
    # batches, so under a deep backlog librdkafka held ten times as much
    # decompressed (a worker at 160 MB with 200,000 jobs waiting, 193 MB
    # with 400,000).  1,000 matches the consumers' own per-partition buffer.
    "queued.min.messages": 1000,
    # A partition over that bound is fetched again after this (default
    # 1000 ms, which idled partitions that drained within a second).
    "fetch.queue.backoff.ms": 20,
}

#: Classic-protocol defaults; the KIP-848 protocol (``group.protocol=consumer``)
#: refuses them: the broker assigns and paces the group there.
CLASSIC_GROUP_DEFAULTS: dict[str, Any] = {
    "partition.assignment.strategy": "cooperative-sticky",
    # Members learn of a rebalance at their next heartbeat (default 3 s).
    "heartbeat.interval.ms": 1000,
}

#: KIP-848 defaults.  The broker's default assignor ("uniform") balances the number of
#: partitions per member, not per topic: with two members, one held every partition of
#: two queues and the other those of the third.  "range" spreads each topic over the
#: members, and the protocol still moves only the partitions that change hands.
CONSUMER_GROUP_DEFAULTS: dict[str, Any] = {"group.remote.assignor": "range"}


def process_key() -> str:
    """This process, ``HOST:PID``: the key of its status records (``status.py``) and the
    end of its group members' ``client.id``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def member_client_id() -> str:
    """The ``client.id`` of this process's group members, unless the settings give one."""
    return f"{CLIENT_ID_PREFIX}{process_key()}"


def new_client(
    config: dict[str, Any], *, name: str, shared: bool, on_commit: Callable[..., None]
) -> ConfluentConsumer:
    """A librdkafka consumer with ``config`` over the defaults.

    Parameters:
      config(dict): The user's settings (the group's id among them).
      name(str): What it is, for logs.
      shared(bool): Whether it uses KIP-848's protocol (``group.protocol=consumer``).
      on_commit(callable): Hears of every commit.
    """
    protocol_defaults = CONSUMER_GROUP_DEFAULTS if shared else CLASSIC_GROUP_DEFAULTS
    # A client.id that names the process lets the dashboard match a group member with
    # its status record (``status.process_key``).
    config = {**CONSUMER_DEFAULTS, **protocol_defaults, "client.id": member_client_id(), **config}
    # Refused credentials come out of consume() as an AuthenticationError.
    errors = ClientErrors(config, f"consumer of {name}", raise_failure=True)
    config = with_log(config, f"consumer of {name}")
    return ConfluentConsumer({**config, "on_commit": on_commit, "error_cb": errors})
