"""What the launcher asks of the operating system: free loopback ports, children that die with their
parent, and the tail of a child's output for an error message.

Finding ``java`` and ``mvn`` is ``tools.py``'s job.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable

from .settings import HOST, TAIL_LINES

_PR_SET_PDEATHSIG = 1


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


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


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
