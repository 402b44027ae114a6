#!/usr/bin/env python3
"""Fetch, start and stop a local Apache Kafka (KRaft) on 127.0.0.1, without Docker.

The broker runs from the jars that Maven fetches with ``kafka-pom.xml`` beside this module (cached per
Kafka version), as one or several combined broker+controller JVMs on free loopback ports.  It ships in
the wheel, so an installed package can start a Kafka for its user's tests (``dramatiq_kafka.testing``).

Module use (tests)::

    from dramatiq_kafka import localkafka

    with localkafka.start_single() as kafka:  # or start_cluster(3), start_single(sasl_users={...})
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})

    # SSL (and SASL_SSL) listeners, from a PEM keystore the caller made (tests/certificates.py):
    with localkafka.start_single(sasl_users=users, tls=localkafka.TlsKeystores(Path("node.pem"))) as kafka:
        producer = Producer(kafka.client_config("alice", ca_location="ca.pem"))

Command line::

    python -m dramatiq_kafka.localkafka fetch
    python -m dramatiq_kafka.localkafka start [single|cluster|sasl] --dir DIR [--timeout S]
    python -m dramatiq_kafka.localkafka status --dir DIR
    python -m dramatiq_kafka.localkafka stop --dir DIR

Only the standard library is used, so that ``scripts/localkafka.py`` can run this file before any
virtualenv exists.

A JVM started through the module API dies with the Python process that started it: it gets
``PR_SET_PDEATHSIG=SIGKILL`` (covers ``kill -9`` of Python) and an ``atexit`` handler stops it on a normal
exit. The kernel sends that signal when the *thread* that forked the JVM exits, not the process, so call
``start_single``/``start_cluster``/``KafkaNode.start`` from a long-lived thread (normally the main thread).
JVMs started by the ``start`` command outlive it on purpose; ``stop --dir DIR`` ends them by PID.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

KAFKA_VERSION = "4.1.2"
SCALA_VERSION = "2.13"
POM = Path(__file__).resolve().parent / "kafka-pom.xml"
LIBS_ENV = "DRAMATIQ_KAFKA_LIBS"

HOST = "127.0.0.1"
READY_LINE = b"Kafka Server started"
START_ATTEMPTS = 3
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
TAIL_LINES = 40
POLL_INTERVAL = 0.1

SASL_MECHANISM = "SCRAM-SHA-512"
CLI_SASL_USERS = {"alice": "alice-secret"}

# Serial GC and C1 only: measured on 2 cores, JVM launch to ready took 1.7 s instead of 2.0 s (G1 flags of
# kafka-server-start.sh) for one node and 3.8 s instead of 5.7 s for 3 nodes, whose C2 compiler threads
# otherwise fight over the cores. Peak throughput does not matter for a test broker.
JVM_FLAGS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
# StorageTool is a short-lived Scala CLI; the tools' default heap is plenty.
FORMAT_JVM_FLAGS: tuple[str, ...] = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

_PROTOCOL_MAP = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"

# Settings for one node; the internal topics get 3 partitions instead of 50 so the first group join and the
# first transaction are fast.
SINGLE_NODE_PROPERTIES: dict[str, str] = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": _PROTOCOL_MAP,
    "auto.create.topics.enable": "true",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "3",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    # The default (128 MiB) would take a quarter of the heap.
    "log.cleaner.dedupe.buffer.size": "16777216",
}

# Fault tests need a killed broker fenced quickly (defaults: 2000 / 9000 ms).
FAST_FENCING_PROPERTIES: dict[str, str] = {
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
}

# A SCRAM server needs no user in its JAAS entry, but the entry itself is mandatory.
SASL_PROPERTIES: dict[str, str] = {
    "sasl.enabled.mechanisms": SASL_MECHANISM,
    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    ),
}

# Kafka reads PEM keystores itself (KIP-651): no keytool, no JKS or PKCS#12 conversion.
TLS_PROPERTIES: dict[str, str] = {"ssl.keystore.type": "PEM"}
# Listener names the nodes use themselves; an extra TLS listener takes another.
_RESERVED_LISTENERS = frozenset({"PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL", "CONTROLLER"})

_PR_SET_PDEATHSIG = 1
# StorageTool's --add-scram syntax has no quoting.
_FORBIDDEN_CREDENTIAL_CHARS = frozenset(",=[]\"'\\ \t\n")


class LocalKafkaError(RuntimeError):
    """Base class of the errors raised here."""


class KafkaFetchError(LocalKafkaError):
    """Maven could not fetch the Kafka jars."""


class KafkaStartError(LocalKafkaError):
    """A node could not be formatted or did not become ready; the message ends with its log tail."""


class KafkaExitedError(KafkaStartError):
    """A JVM exited before it was ready (for instance because a port was taken meanwhile)."""


@dataclass(frozen=True)
class TlsKeystores:
    """The PEM keystores of a node's TLS listeners: each file holds an unencrypted PKCS#8 private key
    followed by the certificate chain (``ssl.keystore.type=PEM``). This module makes no certificate
    (it uses the standard library only); ``tests/certificates.py`` shows how with ``cryptography``.

    Parameters:
      keystore(Path): Served by the ``SSL`` listener, and by the ``SASL_SSL`` one when the node has
        SASL users.
      extra(Mapping[str, Path]): Listener name (``EXPIRED``) to keystore: one more ``SSL`` listener
        each, serving another certificate (an expired one, for a test).
    """

    keystore: Path
    extra: Mapping[str, Path] = field(default_factory=dict)

    def listener_names(self, sasl: bool) -> list[str]:
        """The TLS listeners of a node with (or without) SASL users, in port order."""
        return ["SSL", *(["SASL_SSL"] if sasl else []), *self.extra]

    def check(self) -> None:
        """Raise ``ValueError`` for a listener name Kafka would refuse or a keystore that is not there."""
        for name in self.extra:
            if name in _RESERVED_LISTENERS or not name.isidentifier() or not name.isupper():
                raise ValueError(
                    f"extra TLS listener {name!r}: use upper-case letters, digits and '_', not one of "
                    f"{sorted(_RESERVED_LISTENERS)}"
                )
        for path in (self.keystore, *self.extra.values()):
            if not Path(path).is_file():
                raise ValueError(f"TLS keystore {str(path)!r} is not a file")


# ----------------------------------------------------------------------------------------------------
# Jars


def default_libs_dir() -> Path:
    """Return ``$DRAMATIQ_KAFKA_LIBS``, else ``~/.cache/dramatiq-kafka/kafka-<version>/libs``."""
    override = os.environ.get(LIBS_ENV)
    if override:
        # Absolute, because it becomes a "DIR/*" classpath.
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "dramatiq-kafka" / f"kafka-{KAFKA_VERSION}" / "libs"


LIBS_DIR = default_libs_dir()


def jars_present(libs: Path) -> bool:
    """Tell whether ``libs`` holds the Kafka core jar (a dir only gets its final name once complete)."""
    return any(libs.glob(f"kafka_{SCALA_VERSION}-*.jar"))


def fetch_jars(libs: Path | None = None) -> Path:
    """Fetch the broker jars into ``libs`` (default ``LIBS_DIR``) unless they are there; return the dir.

    Maven writes into a temporary sibling dir that is renamed at the end, so an interrupted fetch never
    leaves a half-filled dir that would pass for complete.
    """
    target = libs if libs is not None else LIBS_DIR
    if jars_present(target):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaFetchError(f"mvn not found on PATH: install Maven, or put the Kafka jars in {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _run_maven(mvn, partial)
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
        _install_dir(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _remove_stale_partials(target: Path, max_age: float = 3600.0) -> None:
    """Remove the partial dirs that killed fetches left (young ones may belong to a fetch still running)."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        with contextlib.suppress(OSError):
            if time.time() - partial.stat().st_mtime > max_age:
                shutil.rmtree(partial)


def _run_maven(mvn: str, dest: Path) -> None:
    """Copy the runtime dependencies of the pom into ``dest``."""
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-Dkafka.libs={dest}",
        # Keeps the pom and the cache dir name (which carries KAFKA_VERSION) in step.
        f"-Dkafka.version={KAFKA_VERSION}",
    ]
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        preexec_fn=_die_with_parent(),  # no Maven left writing into a dir nobody will rename
    )
    if result.returncode != 0 or not jars_present(dest):
        raise KafkaFetchError(
            f"fetching the Kafka {KAFKA_VERSION} jars failed (exit {result.returncode}):\n"
            f"{' '.join(command)}\n{_tail(result.stdout)}"
        )


def _install_dir(partial: Path, target: Path) -> None:
    """Give the complete ``partial`` dir its final name ``target``."""
    with contextlib.suppress(OSError):
        target.rmdir()  # only succeeds when empty, e.g. a dir the user created for $DRAMATIQ_KAFKA_LIBS
    try:
        partial.rename(target)
    except OSError as exc:
        if jars_present(target):
            return  # another process fetched the same jars at the same time
        raise KafkaFetchError(f"{target} exists but holds no kafka_{SCALA_VERSION}-*.jar: remove it") from exc


# ----------------------------------------------------------------------------------------------------
# Small helpers


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free loopback ports (all held open together, so none is picked twice)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int, timeout: float = 1.0) -> bool:
    """Tell whether something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def new_cluster_id() -> str:
    """Return a KRaft cluster id, as ``kafka-storage random-uuid`` would (without starting a JVM)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # StorageTool's argument parser would read a leading '-' as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


def check_tools(libs: Path | None = None) -> None:
    """Raise :class:`LocalKafkaError` naming everything missing to start a node: Java always, Maven
    only while the jars are not in ``libs`` (default ``LIBS_DIR``) yet."""
    missing = []
    try:
        java_executable()
    except LocalKafkaError as exc:
        missing.append(str(exc))
    target = libs if libs is not None else LIBS_DIR
    if not jars_present(target) and shutil.which("mvn") is None:
        missing.append(
            f"mvn not found on PATH: install Maven, or put the Kafka {KAFKA_VERSION} jars in {target}"
        )
    if missing:
        raise LocalKafkaError("cannot start a local Kafka: " + "; ".join(missing))


def java_executable() -> str:
    """Return ``$JAVA_HOME/bin/java`` when set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise LocalKafkaError("java not found: install Java 17+ or set JAVA_HOME")
    return found


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def _render_properties(props: Mapping[str, str]) -> str:
    """Render a Java properties file (values here hold no backslash, so no escaping is needed)."""
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _check_credentials(users: Mapping[str, str]) -> None:
    """Reject names and passwords that ``StorageTool --add-scram`` cannot parse."""
    for value in (*users.keys(), *users.values()):
        if not value or _FORBIDDEN_CREDENTIAL_CHARS.intersection(value):
            raise ValueError(
                f"SCRAM user names and passwords must be non-empty, without {{,=[]'\"}}: {value!r}"
            )


def _die_with_parent() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child get SIGKILL when the forking thread exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before fork: loading a library in the child of a threaded parent can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # If the parent died between fork and prctl, no signal would ever come.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


# ----------------------------------------------------------------------------------------------------
# Nodes

# Nodes tied to this process and workdirs it created: the atexit handler cleans up whatever is left.
_LIVE_NODES: set[KafkaNode] = set()
_OWNED_DIRS: set[Path] = set()


class KafkaNode:
    """One Kafka JVM (combined broker and controller) and its directory.

    ``workdir`` holds ``server.properties``, ``log4j2.properties``, ``kafka.out`` (the JVM's stdout and
    stderr; the previous run's is kept as ``kafka.out.1``), ``data/`` (``log.dirs``) and ``logs/``.
    With ``tie_to_parent`` (the default) the JVM dies with this process, see the module docstring.
    """

    def __init__(
        self,
        node_id: int,
        workdir: Path,
        broker_port: int,
        controller_port: int,
        sasl_port: int | None = None,
        *,
        tls: TlsKeystores | None = None,
        tls_ports: Mapping[str, int] | None = None,
        cluster_properties: Mapping[str, str] | None = None,
        libs: Path | None = None,
        tie_to_parent: bool = True,
    ) -> None:
        self.node_id = node_id
        self.workdir = workdir
        self.broker_port = broker_port
        self.controller_port = controller_port
        self.sasl_port = sasl_port
        self.tls = tls
        #: TLS listener name (``SSL``, ``SASL_SSL``, an extra one) to port.
        self.tls_ports = dict(tls_ports or {})
        if (tls is None) == bool(self.tls_ports):
            raise ValueError("a node's TLS listeners need both tls and tls_ports")
        self.tie_to_parent = tie_to_parent
        # Without cluster settings, the node is a cluster of its own.
        self._cluster_properties = dict(cluster_properties or cluster_properties_for([controller_port]))
        self._libs = libs if libs is not None else LIBS_DIR
        self._proc: subprocess.Popen[bytes] | None = None
        self._scan_offset = 0
        self._saw_ready_line = False
        # All nodes of this node's KRaft quorum (a cluster sets it), to know when a majority is gone.
        self.quorum: list[KafkaNode] = [self]

    def __repr__(self) -> str:
        return f"KafkaNode(node_id={self.node_id}, broker_port={self.broker_port}, pid={self.pid})"

    # Paths and addresses

    @property
    def config_path(self) -> Path:
        """The node's ``server.properties``."""
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.workdir / "kafka.out"

    @property
    def data_dir(self) -> Path:
        """The node's ``log.dirs``."""
        return self.workdir / "data"

    @property
    def bootstrap_server(self) -> str:
        """``127.0.0.1:port`` of the PLAINTEXT listener."""
        return f"{HOST}:{self.broker_port}"

    @property
    def pid(self) -> int | None:
        """PID of the current (or last) JVM, None before the first start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Tell whether the JVM is alive."""
        return self._proc is not None and self._proc.poll() is None

    # Configuration

    def server_properties(self) -> dict[str, str]:
        """Return this node's broker settings."""
        listeners = [f"PLAINTEXT://{HOST}:{self.broker_port}"]
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://{HOST}:{self.sasl_port}")
        listeners += [f"{name}://{HOST}:{port}" for name, port in self.tls_ports.items()]
        props = dict(self._cluster_properties)
        props.update(
            {
                "node.id": str(self.node_id),
                # The controller listener is not advertised: the static quorum lists it in the voters.
                "listeners": ",".join([*listeners, f"CONTROLLER://{HOST}:{self.controller_port}"]),
                "advertised.listeners": ",".join(listeners),
                "log.dirs": str(self.data_dir),
            }
        )
        if self.sasl_port is not None:
            props.update(SASL_PROPERTIES)
        if self.tls is not None:
            props.update(self._tls_properties(self.tls))
        return props

    def _tls_properties(self, tls: TlsKeystores) -> dict[str, str]:
        extra = {name: f"{name}:SSL" for name in tls.extra}
        props = {
            **TLS_PROPERTIES,
            "ssl.keystore.location": str(Path(tls.keystore).resolve()),
            "listener.security.protocol.map": ",".join(
                [_PROTOCOL_MAP, "SSL:SSL", "SASL_SSL:SASL_SSL", *extra.values()]
            ),
        }
        for name, keystore in tls.extra.items():
            # A listener's own ssl.* settings take precedence over the node's.
            props[f"listener.name.{name.lower()}.ssl.keystore.location"] = str(Path(keystore).resolve())
        if "SASL_SSL" in self.tls_ports:
            props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] = SASL_PROPERTIES[
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"
            ]
        return props

    def write_config(self) -> None:
        """Create the node dir (wiping an old one) and write its config files."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.config_path.write_text(_render_properties(self.server_properties()))
        (self.workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def format_command(self, cluster_id: str, scram_users: Mapping[str, str] | None = None) -> list[str]:
        """Return the ``StorageTool format`` command line that prepares ``data_dir``."""
        command = [
            java_executable(),
            *FORMAT_JVM_FLAGS,
            *self._log_flags(),
            "-cp",
            f"{self._libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_path),
        ]
        for name, password in (scram_users or {}).items():
            command += ["--add-scram", f"{SASL_MECHANISM}=[name={name},password={password}]"]
        return command

    def _log_flags(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
        ]

    def _start_command(self) -> list[str]:
        return [
            java_executable(),
            *JVM_FLAGS,
            *self._log_flags(),
            "-cp",
            f"{self._libs}/*",
            "kafka.Kafka",
            str(self.config_path),
        ]

    # Life cycle

    def start(self) -> None:
        """Launch the JVM on the formatted data dir without waiting; see ``wait_ready``."""
        if self.running:
            raise LocalKafkaError(f"node {self.node_id} is already running (pid {self.pid})")
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name("kafka.out.1"))
        self._scan_offset = 0
        self._saw_ready_line = False
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                self._start_command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Ctrl-C in a terminal goes to Python, which stops the node in order; and a JVM started by
                # the CLI must not get the terminal's SIGHUP.
                start_new_session=True,
                preexec_fn=_die_with_parent() if self.tie_to_parent else None,
            )
        if self.tie_to_parent:
            _LIVE_NODES.add(self)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for ``Kafka Server started`` in kafka.out and for the broker port(s) to accept connections.

        Raises ``KafkaExitedError`` if the JVM exits first and ``KafkaStartError`` on timeout.
        """
        wait_nodes_ready([self], time.monotonic() + timeout)

    def is_ready(self) -> bool:
        """Check readiness once; raise ``KafkaExitedError`` if the JVM is gone."""
        if self._proc is None:
            raise LocalKafkaError(f"node {self.node_id} was never started")
        code = self._proc.poll()
        if code is not None:
            raise KafkaExitedError(
                f"Kafka node {self.node_id} (pid {self.pid}) exited with code {code} before it was ready\n"
                f"{self._log_block()}"
            )
        if not self._ready_line_seen():
            return False
        ports = [self.broker_port] if self.sasl_port is None else [self.broker_port, self.sasl_port]
        return all(port_open(port) for port in [*ports, *self.tls_ports.values()])

    def _ready_line_seen(self) -> bool:
        """Scan only the new part of kafka.out, keeping an overlap for a line split across reads."""
        if self._saw_ready_line:
            return True
        start = max(0, self._scan_offset - len(READY_LINE) + 1)
        try:
            with self.log_path.open("rb") as log:
                log.seek(start)
                chunk = log.read()
        except FileNotFoundError:
            return False
        self._scan_offset = start + len(chunk)
        self._saw_ready_line = READY_LINE in chunk
        return self._saw_ready_line

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop in order (SIGTERM), with SIGKILL if the JVM is still there after ``timeout`` seconds."""
        stop_nodes([self], timeout)

    def kill(self) -> None:
        """Crash the JVM with SIGKILL (for fault tests); its data dir is kept for ``restart``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        _LIVE_NODES.discard(self)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop the node if it runs, start it again with the same ports and data dir, and wait until ready."""
        self.stop()
        self.start()
        self.wait_ready(timeout)

    # Inspection

    def rss_bytes(self) -> int:
        """Return the JVM's resident set size (``VmRSS`` of /proc/PID/status)."""
        if not self.running:
            raise LocalKafkaError(f"node {self.node_id} is not running")
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise LocalKafkaError(f"no VmRSS in /proc/{self.pid}/status")

    def log_tail(self, n: int = TAIL_LINES) -> str:
        """Return the last ``n`` lines of kafka.out."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), n)
        except FileNotFoundError:
            return ""

    def _log_block(self) -> str:
        return f"--- last {TAIL_LINES} lines of {self.log_path} ---\n{self.log_tail()}"

    # Used by stop_nodes

    def _signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)


def stop_nodes(nodes: Iterable[KafkaNode], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every running node at once, wait up to ``timeout`` s, then SIGKILL what is left.

    All at once, because a node whose quorum has no majority left cannot finish a controlled shutdown: its
    broker waits (up to 5 minutes) for a controller that can no longer be elected. Even so, the last nodes
    of a simultaneous stop can lose that race, so they get SIGKILL as soon as their quorum has lost its
    majority; waiting could not help them.
    """
    running = [node for node in nodes if node.running]
    for node in running:
        node._signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [node for node in running if node.running]
        if not left:
            break
        for node in left:
            if _quorum_lost(node):
                node.kill()
        time.sleep(POLL_INTERVAL)
    for node in running:
        node.kill()
    for node in nodes:
        if not node.running:
            _LIVE_NODES.discard(node)


def _quorum_lost(node: KafkaNode) -> bool:
    """Tell whether fewer than a majority of the node's quorum (itself included) still run."""
    alive = sum(peer.running for peer in node.quorum)
    return alive < len(node.quorum) // 2 + 1


def wait_nodes_ready(nodes: Sequence[KafkaNode], deadline: float) -> None:
    """Wait until every node is ready, or raise (see ``KafkaNode.wait_ready``) at ``deadline``."""
    pending = list(nodes)
    while True:
        pending = [node for node in pending if not node.is_ready()]
        if not pending:
            return
        if time.monotonic() >= deadline:
            blocks = "\n".join(node._log_block() for node in pending)
            ids = ", ".join(str(node.node_id) for node in pending)
            raise KafkaStartError(f"Kafka node(s) {ids} not ready in time\n{blocks}")
        time.sleep(POLL_INTERVAL)


def format_nodes(
    nodes: Sequence[KafkaNode], cluster_id: str, scram_users: Mapping[str, str], deadline: float
) -> None:
    """Format the data dirs of all nodes in parallel (one StorageTool JVM each, about 0.7 s)."""
    procs = [
        (
            node,
            subprocess.Popen(
                node.format_command(cluster_id, scram_users),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(),
            ),
        )
        for node in nodes
    ]
    try:
        for node, proc in procs:
            _check_formatted(node, proc, deadline)
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _check_formatted(node: KafkaNode, proc: subprocess.Popen[bytes], deadline: float) -> None:
    try:
        output, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise KafkaStartError(f"formatting {node.data_dir} timed out") from exc
    if proc.returncode != 0:
        log = _tail(output.decode(errors="replace"))
        raise KafkaStartError(f"formatting {node.data_dir} failed (exit {proc.returncode})\n{log}")


@atexit.register
def _stop_leftovers() -> None:
    """Stop the nodes still tied to this process and remove the workdirs it created."""
    stop_nodes(list(_LIVE_NODES))
    for path in list(_OWNED_DIRS):
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Clusters


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


def cluster_properties_for(controller_ports: Sequence[int]) -> dict[str, str]:
    """Return the settings shared by all nodes of a cluster with these controller ports."""
    voters = ",".join(f"{i}@{HOST}:{port}" for i, port in enumerate(controller_ports, start=1))
    props = {**SINGLE_NODE_PROPERTIES, "controller.quorum.voters": voters}
    size = len(controller_ports)
    if size == 1:
        return props
    replication = str(min(size, 3))
    min_isr = str(min(size, 3) - 1)
    props.update(
        {
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "unclean.leader.election.enable": "false",
            **FAST_FENCING_PROPERTIES,
        }
    )
    return props


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


# ----------------------------------------------------------------------------------------------------
# Command line: JVMs that outlive the launcher, found again through DIR/state.json


def _state_path(directory: Path) -> Path:
    return directory / "state.json"


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_path(directory).read_text())
    except FileNotFoundError:
        return None
    return state


def _write_state(directory: Path, state: Mapping[str, Any]) -> None:
    """Write state.json atomically, so a concurrent ``stop`` never reads half a file."""
    tmp = _state_path(directory).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(_state_path(directory))


def _state_for(
    mode: str, nodes: Sequence[KafkaNode], users: Mapping[str, str], status: str
) -> dict[str, Any]:
    cluster = KafkaCluster(nodes, nodes[0].workdir.parent, sasl_users=users)
    state: dict[str, Any] = {
        "mode": mode,
        "status": status,
        "kafka_version": KAFKA_VERSION,
        "bootstrap_servers": cluster.bootstrap_servers,
        "nodes": [
            {
                "node_id": node.node_id,
                "pid": node.pid,
                "broker_port": node.broker_port,
                "controller_port": node.controller_port,
                "sasl_port": node.sasl_port,
                "tls_ports": node.tls_ports,
                "config": str(node.config_path),
                "log": str(node.log_path),
            }
            for node in nodes
        ],
    }
    if users:
        name, password = next(iter(users.items()))
        state.update(
            sasl_bootstrap_servers=cluster.sasl_bootstrap_servers,
            sasl_mechanism=SASL_MECHANISM,
            sasl_username=name,
            sasl_password=password,
        )
    return state


def _pid_is_node(pid: int, config: str) -> bool:
    """Tell whether ``pid`` is still the Kafka JVM of ``config``.

    This guards against PID reuse; a zombie has an empty cmdline, so it counts as gone.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in argv and config.encode() in argv


def _live_pids(state: Mapping[str, Any]) -> list[int]:
    """Return the PIDs of the recorded nodes that still run."""
    nodes = state.get("nodes", [])
    return [node["pid"] for node in nodes if node["pid"] and _pid_is_node(node["pid"], node["config"])]


def _stop_pids(state: Mapping[str, Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM all live node PIDs at once, SIGKILL those left after ``timeout``; return how many ran."""
    pids = _live_pids(state)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    majority = len(state.get("nodes", [])) // 2 + 1
    # As in stop_nodes: once the quorum has lost its majority, the nodes left can only hang.
    while time.monotonic() < deadline and len(_live_pids(state)) >= majority:
        time.sleep(POLL_INTERVAL)
    for pid in _live_pids(state):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while _live_pids(state) and time.monotonic() < deadline + 10:
        time.sleep(POLL_INTERVAL)
    return len(pids)


def cli_start(mode: str, directory: Path, timeout: float) -> int:
    """Start detached node(s), record them in DIR/state.json and print the bootstrap servers."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    previous = _read_state(directory)
    if previous is not None and _live_pids(previous):
        print(f"localkafka: Kafka already runs from {directory} (stop it first)", file=sys.stderr)
        return 1
    users = CLI_SASL_USERS if mode == "sasl" else {}

    def record(nodes: Sequence[KafkaNode]) -> None:
        _write_state(directory, _state_for(mode, nodes, users, "starting"))

    try:
        cluster = launch(
            3 if mode == "cluster" else 1,
            directory,
            sasl_users=users,
            timeout=timeout,
            tie_to_parent=False,
            on_launch=record,
        )
    except (LocalKafkaError, KeyboardInterrupt) as exc:
        # launch() has stopped the JVMs already; only the record is left to fix.
        state = _read_state(directory)
        if state is not None:
            _write_state(directory, {**state, "status": "failed"})
        print(f"localkafka: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    _write_state(directory, _state_for(mode, cluster.nodes, users, "ready"))
    print(cluster.bootstrap_servers)
    return 0


def cli_stop(directory: Path) -> int:
    """Stop the nodes recorded in DIR/state.json; fine when there is nothing to stop."""
    state = _read_state(directory)
    if state is None:
        print(f"localkafka: nothing to stop in {directory}")
        return 0
    stopped = _stop_pids(state)
    _write_state(directory, {**state, "status": "stopped"})
    print(f"localkafka: stopped {stopped} node(s)")
    return 0


def cli_status(directory: Path) -> int:
    """Print the state of the nodes recorded in DIR/state.json; exit 0 only if all run and listen."""
    state = _read_state(directory)
    if state is None:
        print(f"not started (no {_state_path(directory)})")
        return 1
    print(f"mode {state['mode']}, status {state['status']}, bootstrap servers {state['bootstrap_servers']}")
    healthy = True
    for node in state["nodes"]:
        alive = bool(node["pid"]) and _pid_is_node(node["pid"], node["config"])
        listening = alive and port_open(node["broker_port"])
        healthy = healthy and listening
        condition = "listening" if listening else ("running, not listening" if alive else "not running")
        print(f"node {node['node_id']}: pid {node['pid']} {condition} on {HOST}:{node['broker_port']}")
    return 0 if healthy else 1


def cli_fetch() -> int:
    """Fetch the jars (no-op when present) and print their dir."""
    try:
        print(fetch_jars())
    except LocalKafkaError as exc:
        print(f"localkafka: {exc}", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m dramatiq_kafka.localkafka", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="fetch the Kafka jars with Maven (no-op when present)")
    start = commands.add_parser("start", help="start Kafka, print its bootstrap servers and exit")
    start.add_argument("mode", nargs="?", choices=("single", "cluster", "sasl"), default="single")
    start.add_argument("--dir", type=Path, required=True, help="work dir (state.json, node dirs)")
    start.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds to wait for readiness")
    for name, help_text in (("stop", "stop the nodes started from DIR"), ("status", "show the nodes of DIR")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dir", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    args = parse_args(argv)
    if args.command == "fetch":
        return cli_fetch()
    if args.command == "start":
        return cli_start(args.mode, args.dir, args.timeout)
    if args.command == "stop":
        return cli_stop(args.dir)
    return cli_status(args.dir)


if __name__ == "__main__":
    sys.exit(main())
