"""What every command connects with: servers, settings, the broker module, names.

:func:`make_context` turns the connection options (``--bootstrap-servers``,
``--config``, ``--broker``, ``--prefix``, ``--group``, ``--timeout``) into a
:class:`Context`, which also names the queues' topics (``topics.py``).
The commands themselves are in ``queues.py``, ``dlq.py`` and ``web.py``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import dramatiq

from ..admin import TopicAdmin
from ..broker import BOOTSTRAP_SERVERS_ENV, KafkaBroker
from ..errors import KafkaConnectionError
from ..topics import queue_of
from ..topology import Topology
from .exits import UsageError
from .properties import read_properties

#: The port of a ``--bootstrap-servers`` host given without one (Kafka's own default).
DEFAULT_PORT = 9092


def with_default_ports(servers: str) -> str:
    """``host`` becomes ``host:9092`` in a ``host[:port],...`` list (also ``[::1]``)."""
    result = []
    for server in servers.split(","):
        server = server.strip()
        address = server.rsplit("://", 1)[-1]
        bracketed = address.startswith("[")
        has_port = address.rsplit("]", 1)[-1].startswith(":") if bracketed else address.count(":") == 1
        result.append(server if has_port or not server else f"{server}:{DEFAULT_PORT}")
    return ",".join(result)


def load_broker(spec: str) -> KafkaBroker:
    """The ``KafkaBroker`` of a module: ``myapp.tasks`` or ``myapp.tasks:attr``.

    Without ``:attr``, the module's ``broker`` attribute, else the broker
    the module set with ``dramatiq.set_broker``.

    Raises:
      UsageError: When the module does not import or holds no KafkaBroker.
    """
    module_name, _, attribute = spec.partition(":")
    # As the `dramatiq` command does: the application is found from here.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(
            f"Cannot import the broker module {module_name!r}: {type(e).__name__}: {e}"
        ) from None
    candidate = getattr(module, attribute or "broker", None)
    if candidate is None and not attribute:
        candidate = dramatiq.broker.global_broker
    if not isinstance(candidate, KafkaBroker):
        where = f"{module_name}:{attribute}" if attribute else module_name
        found = "nothing" if candidate is None else type(candidate).__name__
        raise UsageError(f"{where!r} holds no KafkaBroker (found {found}).")
    return candidate


@dataclass
class Context:
    """What every command needs: the clients' settings and the topic names."""

    config: dict[str, Any]
    prefix: str
    group: str
    timeout: float
    broker: KafkaBroker | None
    out: TextIO
    #: Warnings go here, never into the output a script reads.
    err: TextIO = sys.stderr
    #: Whether ``--group`` named the group (not the broker's or the default).
    group_given: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return str(self.config["bootstrap.servers"])

    @functools.cached_property
    def topology(self) -> Topology:
        """The queues' topics: the broker's, under ``--prefix`` when it was given."""
        return (self.broker.topology if self.broker is not None else Topology()).with_prefix(self.prefix)

    def admin(self) -> TopicAdmin:
        check_reachable(self.bootstrap_servers, min(self.timeout, 5.0))
        return TopicAdmin(self.config, self.group, timeout=self.timeout)

    def share_group_of(self, name: str) -> str | None:
        """The share group that consumes queue ``name``, as far as the broker says."""
        if self.broker is None or name not in self.broker.get_declared_queues():
            return None
        return self.broker.share_group_of(name)

    def queues(self, topics: set[str], wanted: Sequence[str] = ()) -> list[str]:
        """The queues to report: those asked for, the broker's, or those the
        topic names reveal (``{prefix}q``, ``q.DQ``, ``q.XQ``)."""
        if wanted:
            return list(wanted)
        if self.broker is not None:
            return sorted(self.broker.get_declared_queues())
        return sorted({queue for topic in topics if (queue := queue_of(self.prefix, topic)) is not None})


def check_reachable(bootstrap_servers: str, timeout: float) -> None:
    """Fail fast when no bootstrap server accepts a TCP connection:
    librdkafka would wait out the whole request timeout.

    Raises:
      KafkaConnectionError: Naming the servers and the socket error.
    """
    errors = []
    for server in bootstrap_servers.split(","):
        address = server.strip().rsplit("://", 1)[-1]
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout):
                return
        except (OSError, ValueError) as e:
            errors.append(f"{server.strip()}: {e}")
    raise KafkaConnectionError(f"Kafka is not reachable at {bootstrap_servers!r} ({'; '.join(errors)}).")


def make_context(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> Context:
    spec = getattr(args, "module", None) or args.broker
    broker = load_broker(spec) if spec else None
    config: dict[str, Any] = dict(broker.client_config) if broker is not None else {}
    if args.config:
        config.update(read_properties(args.config))
    servers = (
        args.bootstrap_servers or config.get("bootstrap.servers") or os.environ.get(BOOTSTRAP_SERVERS_ENV)
    )
    config["bootstrap.servers"] = with_default_ports(servers or "localhost")
    # librdkafka's own warnings (a coordinator still loading...) are noise here.
    config.setdefault("log_level", 3)
    prefix = args.prefix if args.prefix is not None else (broker.topic_prefix if broker else "")
    group = args.group or (broker.group_id if broker else "dramatiq")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    return Context(
        config, prefix, group, args.timeout, broker, out, err or sys.stderr, group_given=bool(args.group)
    )
