"""``KafkaCluster`` (running nodes, a context manager) and the ways to start one.

``start_single``, ``start_cluster`` and ``launch`` under them: check the tools, fetch the jars, pick
free ports, write the nodes' configs, format, start and wait, retrying on new ports when a JVM exits
early.  One node is ``node.py``; the command line's detached nodes are ``command.py``'s.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .errors import KafkaExitedError, LocalKafkaError
from .jars import fetch_jars
from .keystores import TlsKeystores
from .node import KafkaNode
from .nodes import _OWNED_DIRS, format_nodes, stop_nodes, wait_nodes_ready
from .properties import cluster_properties_for
from .settings import HOST, SASL_MECHANISM, START_ATTEMPTS, START_TIMEOUT, STOP_TIMEOUT
from .system import free_ports
from .tools import check_tools

# StorageTool's --add-scram syntax has no quoting.
_FORBIDDEN_CREDENTIAL_CHARS = frozenset(",=[]\"'\\ \t\n")


class KafkaCluster:
    """One or several running nodes; a context manager that stops them on exit."""

    def __init__(
        self,
        nodes: Sequence[KafkaNode],
        workdir: Path,
        *,
        owns_workdir: bool = False,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.workdir = workdir
        self.owns_workdir = owns_workdir
        self.sasl_users = dict(sasl_users or {})

    def __repr__(self) -> str:
        return f"KafkaCluster({self.bootstrap_servers!r}, nodes={len(self.nodes)})"

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of the PLAINTEXT listeners."""
        return ",".join(node.bootstrap_server for node in self.nodes)

    @property
    def sasl_bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of the SASL_PLAINTEXT listeners."""
        ports = [node.sasl_port for node in self.nodes if node.sasl_port is not None]
        if not ports:
            raise LocalKafkaError("this cluster has no SASL listener: start it with sasl_users")
        return ",".join(f"{HOST}:{port}" for port in ports)

    def tls_bootstrap_servers(self, listener: str = "SSL") -> str:
        """Comma-separated ``127.0.0.1:port`` list of a TLS listener (``SSL``, ``SASL_SSL``, an extra one)."""
        ports = [node.tls_ports[listener] for node in self.nodes if listener in node.tls_ports]
        if not ports:
            raise LocalKafkaError(
                f"this cluster has no {listener} listener: start it with tls (and sasl_users)"
            )
        return ",".join(f"{HOST}:{port}" for port in ports)

    def client_config(
        self,
        sasl_user: str | None = None,
        *,
        ca_location: str | Path | None = None,
        listener: str | None = None,
    ) -> dict[str, str]:
        """Return librdkafka settings for the PLAINTEXT listeners, or for the SASL ones as ``sasl_user``.

        With ``ca_location`` (the CA's PEM file), for the ``SSL`` listeners, or ``SASL_SSL`` with
        ``sasl_user``; ``listener`` names another TLS listener (one of ``TlsKeystores.extra``).
        """
        config = {"bootstrap.servers": self.bootstrap_servers}
        if ca_location is not None:
            protocol = "SSL" if sasl_user is None else "SASL_SSL"
            config = {
                "bootstrap.servers": self.tls_bootstrap_servers(listener or protocol),
                "security.protocol": protocol,
                "ssl.ca.location": str(ca_location),
            }
        elif sasl_user is not None:
            config = {"bootstrap.servers": self.sasl_bootstrap_servers, "security.protocol": "SASL_PLAINTEXT"}
        if sasl_user is not None:
            config.update(
                {
                    "sasl.mechanism": SASL_MECHANISM,
                    "sasl.username": sasl_user,
                    "sasl.password": self.sasl_users[sasl_user],
                }
            )
        return config

    def node(self, node_id: int) -> KafkaNode:
        """Return the node with this ``node.id``."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every node is ready (for instance after restarting several)."""
        wait_nodes_ready(self.nodes, time.monotonic() + timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop all nodes at once (see ``stop_nodes``), and remove the workdir if it was created here.

        Idempotent; a workdir given by the caller is kept, with the nodes' logs.
        """
        stop_nodes(self.nodes, timeout)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            _OWNED_DIRS.discard(self.workdir)


def start_single(
    workdir: Path | None = None,
    *,
    sasl_users: Mapping[str, str] | None = None,
    tls: TlsKeystores | None = None,
    timeout: float = START_TIMEOUT,
) -> KafkaCluster:
    """Start one node and wait until it is ready.

    ``workdir`` defaults to a fresh temp dir, removed by ``stop()``; a given dir is kept, but its ``node-*``
    subdirs are wiped first. ``sasl_users`` (name to password) adds a SASL_PLAINTEXT listener with
    SCRAM-SHA-512 and these users. ``tls`` adds an SSL listener (and SASL_SSL with ``sasl_users``),
    plus one SSL listener per extra keystore.
    """
    return launch(1, workdir, sasl_users=sasl_users, tls=tls, timeout=timeout)


def start_cluster(n: int = 3, workdir: Path | None = None, timeout: float = START_TIMEOUT) -> KafkaCluster:
    """Start ``n`` nodes forming one static KRaft quorum and wait until all are ready.

    With 3 nodes: replication factor 3, ``min.insync.replicas=2`` and fast fencing, so one node can be
    killed while ``acks=all`` writes go on.
    """
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    return launch(n, workdir, timeout=timeout)


def launch(
    n: int,
    workdir: Path | None = None,
    *,
    sasl_users: Mapping[str, str] | None = None,
    tls: TlsKeystores | None = None,
    timeout: float = START_TIMEOUT,
    tie_to_parent: bool = True,
    on_launch: Callable[[Sequence[KafkaNode]], None] | None = None,
) -> KafkaCluster:
    """Fetch the jars, then format, start and wait for ``n`` nodes; retry with new ports on an early exit.

    ``on_launch`` is called with the nodes once their JVMs run, before waiting (the CLI records the PIDs
    there, so that ``stop`` finds them even if the launcher dies while waiting).
    """
    users = dict(sasl_users or {})
    _check_credentials(users)
    if tls is not None:
        tls.check()
    check_tools()
    libs = fetch_jars()
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="dramatiq-kafka-")) if workdir is None else workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if owned and tie_to_parent:
        _OWNED_DIRS.add(root)
    deadline = time.monotonic() + timeout
    try:
        nodes = _start_with_retries(n, root, users, tls, libs, deadline, tie_to_parent, on_launch)
    except BaseException:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
            _OWNED_DIRS.discard(root)
        raise
    return KafkaCluster(nodes, root, owns_workdir=owned, sasl_users=users)


def _start_with_retries(
    n: int,
    root: Path,
    users: Mapping[str, str],
    tls: TlsKeystores | None,
    libs: Path,
    deadline: float,
    tie_to_parent: bool,
    on_launch: Callable[[Sequence[KafkaNode]], None] | None,
) -> list[KafkaNode]:
    """Run start attempts with fresh ports until one succeeds; only an early JVM exit is retried."""
    for attempt in range(1, START_ATTEMPTS + 1):
        nodes = _make_nodes(n, root, sasl=bool(users), tls=tls, libs=libs, tie_to_parent=tie_to_parent)
        try:
            format_nodes(nodes, new_cluster_id(), users, deadline)
            for node in nodes:
                node.start()
            if on_launch is not None:
                on_launch(nodes)
            wait_nodes_ready(nodes, deadline)
            return nodes
        except KafkaExitedError as exc:
            # Most likely a port taken between our check and the JVM's bind.
            stop_nodes(nodes)
            if attempt == START_ATTEMPTS or time.monotonic() >= deadline:
                raise KafkaExitedError(f"gave up after {attempt} attempt(s): {exc}") from exc
        except BaseException:
            stop_nodes(nodes)
            raise
    raise AssertionError("unreachable")


def _make_nodes(
    n: int, root: Path, *, sasl: bool, tls: TlsKeystores | None, libs: Path, tie_to_parent: bool
) -> list[KafkaNode]:
    """Pick free ports and write the config of ``n`` nodes under ``root/node-<id>``."""
    tls_names = tls.listener_names(sasl) if tls is not None else []
    ports = free_ports((3 if sasl else 2) * n + len(tls_names) * n)
    broker_ports, controller_ports = ports[:n], ports[n : 2 * n]
    sasl_ports = ports[2 * n : 3 * n] if sasl else []
    tls_ports = ports[(3 if sasl else 2) * n :]
    shared = cluster_properties_for(controller_ports)
    nodes = [
        KafkaNode(
            node_id,
            root / f"node-{node_id}",
            broker_ports[node_id - 1],
            controller_ports[node_id - 1],
            sasl_ports[node_id - 1] if sasl else None,
            tls=tls,
            tls_ports={
                name: tls_ports[(node_id - 1) * len(tls_names) + i] for i, name in enumerate(tls_names)
            },
            cluster_properties=shared,
            libs=libs,
            tie_to_parent=tie_to_parent,
        )
        for node_id in range(1, n + 1)
    ]
    for node in nodes:
        node.quorum = nodes
        node.write_config()
    return nodes


def new_cluster_id() -> str:
    """Return a KRaft cluster id, as ``kafka-storage random-uuid`` would (without starting a JVM)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # StorageTool's argument parser would read a leading '-' as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_credentials(users: Mapping[str, str]) -> None:
    """Reject names and passwords that ``StorageTool --add-scram`` cannot parse."""
    for value in (*users.keys(), *users.values()):
        if not value or _FORBIDDEN_CREDENTIAL_CHARS.intersection(value):
            raise ValueError(
                f"SCRAM user names and passwords must be non-empty, without {{,=[]'\"}}: {value!r}"
            )
