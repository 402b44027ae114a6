"""The local Kafka launcher never leaves a JVM behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from integration.workers import ROOT
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

LAUNCHER = """
import sys, time
from dramatiq_kafka import localkafka
cluster = localkafka.start_single()
print(cluster.nodes[0].pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it holds no ports and no memory.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_kill_9_of_the_launching_process_takes_its_jvm_with_it() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    pid = int(launcher.stdout.readline())
    assert alive(pid)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(10)
    started = time.monotonic()
    wait_for(lambda: not alive(pid), timeout=10)
    print(f"\nJVM {pid} gone {time.monotonic() - started:.2f}s after kill -9 of its launcher")
