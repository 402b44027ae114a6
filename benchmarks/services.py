"""What the benchmark compares against: Redis and RabbitMQ servers, and
dramatiq-kafka 0.1.9 in a virtualenv of its own.

Servers are Debian's packages (installed with ``apt-get`` when missing),
started on free loopback ports in a directory of their own, each in its own
process group, and stopped by that group's id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
#: The package whose end-to-end figure and lost/duplicated counts we report.
LEGACY_PACKAGE = "dramatiq-kafka==0.1.9"
#: Debian packages that provide the servers.
APT_PACKAGES = {"redis-server": "redis-server", "rabbitmq-server": "rabbitmq-server"}
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class ServiceError(RuntimeError):
    """A server could not be installed or started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"exited with {proc.returncode}; see {log}:\n{tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise ServiceError(f"port {port} not open after {timeout:.0f}s; see {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def apt_install(*packages: str) -> None:
    """Install Debian packages (needs root); servers are not started by the install."""
    if shutil.which("apt-get") is None:
        raise ServiceError(f"apt-get is missing: install {', '.join(packages)} by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"[bench] apt-get install -y {' '.join(packages)}", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


class Server:
    """One server process (group) we started."""

    def __init__(self, name: str, command: list[str], port: int, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.log = workdir / f"{name}.log"
        #: Servers stopped after this one.
        self.companions: list[Server] = []
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            for companion in self.companions:
                companion.stop()

    def _stop(self) -> None:
        if self.proc.poll() is not None:
            return
        # The group of the process we started: rabbitmq-server's shell
        # wrapper, its Erlang VM and epmd, nothing else.
        pgid = self.proc.pid
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(10)
        # Children that outlive the leader (epmd) are still in the group.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_redis(workdir: Path) -> tuple[Server, str]:
    if shutil.which("redis-server") is None:
        apt_install(APT_PACKAGES["redis-server"])
    port = free_port()
    server = Server(
        "redis",
        # No persistence: the figures are the broker's, not the disk's.
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        port,
        workdir,
        dict(os.environ),
    )
    wait_port(port, server.proc, 30, server.log)
    return server, f"redis://{HOST}:{port}/0"


def start_rabbitmq(workdir: Path) -> tuple[Server, str]:
    if not RABBITMQ_SERVER.exists():
        apt_install(APT_PACKAGES["rabbitmq-server"])
    home = workdir / "rabbitmq"
    (home / "mnesia").mkdir(parents=True, exist_ok=True)
    (home / "log").mkdir(exist_ok=True)
    (home / "enabled_plugins").write_text("[].\n")
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        # Our own cookie, epmd and directories: nothing shared with a system RabbitMQ.
        "HOME": str(home),
        "RABBITMQ_NODENAME": f"bench{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
    }
    (home / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
    # Our own epmd in the foreground: the one Erlang would start daemonizes
    # out of our process group and outlives the benchmark.
    epmd = Server("epmd", [_epmd(), "-port", str(epmd_port), "-address", HOST], epmd_port, workdir, env)
    wait_port(epmd_port, epmd.proc, 30, epmd.log)
    server = Server("rabbitmq", [str(RABBITMQ_SERVER)], port, workdir, env)
    server.companions.append(epmd)
    wait_port(port, server.proc, 120, server.log)
    return server, f"amqp://guest:guest@{HOST}:{port}/%2F"


def _epmd() -> str:
    found = shutil.which("epmd") or next(iter(sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), None)
    if found is None:
        raise ServiceError("epmd (Erlang) not found; is rabbitmq-server installed?")
    return str(found)


def legacy_python(root: Path, dramatiq_version: str) -> Path:
    """The interpreter of a virtualenv holding dramatiq-kafka 0.1.9 (and the
    kafka-python it pins, with lz4: our producer compresses), created on
    first use."""
    venv = root / "venv-0.1.9"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        print(f"[bench] creating {venv} with {LEGACY_PACKAGE}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                LEGACY_PACKAGE,
                f"dramatiq=={dramatiq_version}",
                "lz4",
            ],
            check=True,
        )
        marker.touch()
    return python
