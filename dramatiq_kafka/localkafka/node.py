"""``KafkaNode``: one Kafka JVM (combined broker and controller) and its directory.

Its configuration files, its ``StorageTool format`` command, its start, readiness, stop, kill and
restart.  What is done to several nodes at once (formatting them in parallel, waiting for them,
stopping them together) and the stop at exit are in ``nodes.py``; a cluster of nodes is in
``cluster.py``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from .errors import KafkaExitedError, LocalKafkaError
from .jars import _libs_dir
from .keystores import TlsKeystores
from .nodes import _LIVE_NODES, stop_nodes, wait_nodes_ready
from .properties import (
    _PROTOCOL_MAP,
    LOG4J2_PROPERTIES,
    SASL_PROPERTIES,
    TLS_PROPERTIES,
    _render_properties,
    cluster_properties_for,
)
from .settings import (
    FORMAT_JVM_FLAGS,
    HOST,
    JVM_FLAGS,
    READY_LINE,
    SASL_MECHANISM,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TAIL_LINES,
)
from .system import _die_with_parent, _tail, port_open
from .tools import java_executable


class KafkaNode:
    """One Kafka JVM (combined broker and controller) and its directory.

    ``workdir`` holds ``server.properties``, ``log4j2.properties``, ``kafka.out`` (the JVM's stdout and
    stderr; the previous run's is kept as ``kafka.out.1``), ``data/`` (``log.dirs``) and ``logs/``.
    With ``tie_to_parent`` (the default) the JVM dies with this process, see the package docstring.
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
        self._libs = libs if libs is not None else _libs_dir()
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
