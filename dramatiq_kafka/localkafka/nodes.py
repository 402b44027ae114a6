"""What is done to several nodes at once, and what is left at exit.

Formatting their data dirs in parallel (``format_nodes``), waiting until all are ready
(``wait_nodes_ready``), stopping them together (``stop_nodes``), and the record of the nodes tied to
this process and the workdirs it created, which an ``atexit`` handler cleans up.  One node is
``KafkaNode`` (``node.py``).
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import KafkaStartError
from .settings import POLL_INTERVAL, STOP_TIMEOUT
from .system import _die_with_parent, _tail

if TYPE_CHECKING:
    from .node import KafkaNode

# Nodes tied to this process and workdirs it created: the atexit handler cleans up whatever is left.
_LIVE_NODES: set[KafkaNode] = set()
_OWNED_DIRS: set[Path] = set()


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
