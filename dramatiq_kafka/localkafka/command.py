"""Fetch, start and stop a local Apache Kafka (KRaft) on 127.0.0.1, without Docker.

The command line (the line above is its ``--help`` description): ``fetch``, ``start``, ``status``,
``stop``.  JVMs it starts outlive it on purpose; ``DIR/state.json`` records them, so that ``status``
and ``stop`` find them again by PID.  Starting nodes is ``cluster.py``'s job; ``python -m
dramatiq_kafka.localkafka`` is ``__main__.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cluster import KafkaCluster, launch
from .errors import LocalKafkaError
from .jars import fetch_jars
from .node import KafkaNode
from .settings import (
    CLI_SASL_USERS,
    HOST,
    KAFKA_VERSION,
    POLL_INTERVAL,
    SASL_MECHANISM,
    START_TIMEOUT,
    STOP_TIMEOUT,
)
from .system import port_open


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
