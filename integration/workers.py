"""Starting ``dramatiq`` CLI workers as subprocesses and reading their ledgers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class CliWorker:
    """One ``dramatiq integration.app`` command, in its own process group.

    Parameters:
      env: Environment of the app (see ``integration/app.py``).
      log: File receiving the worker's output.
      processes, threads: As for the ``dramatiq`` command.
    """

    def __init__(self, env: dict[str, str], log: Path, *, processes: int = 1, threads: int = 8) -> None:
        self.log = log
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            "integration.app",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--worker-shutdown-timeout",
            "60000",
        ]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def terminate(self, timeout: float = 90) -> int:
        """SIGTERM, as a process manager would; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler runs, nothing is flushed."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assigned(self, queue: str) -> bool:
        """Whether the worker's consumer of ``queue`` holds partitions."""
        return re.search(rf"Assigned partitions \[\d.* of '{re.escape(queue)}'", self.output()) is not None


def ledger_lines(directory: Path, event: str = "done") -> list[tuple[str, int, int, int]]:
    """``(ledger file, job id, partition, offset)`` of every ``event`` line, per file in order."""
    lines = []
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text().splitlines():
            name, job_id, partition, offset = line.split()[:4]
            if name == event:
                lines.append((path.stem, int(job_id), int(partition), int(offset)))
    return lines


def ledger(directory: Path, event: str = "done") -> Counter[int]:
    """How many times each job id reached ``event`` across all processes."""
    return Counter(job_id for _, job_id, _, _ in ledger_lines(directory, event))


def ledger_times(directory: Path, event: str = "done") -> list[tuple[int, int, int, float]]:
    """``(job id, partition, offset, unix time)`` of every ``event`` line, in time order."""
    lines = []
    for path in directory.glob("*.log"):
        for line in path.read_text().splitlines():
            name, job_id, partition, offset, at = line.split()
            if name == event:
                lines.append((int(job_id), int(partition), int(offset), float(at)))
    return sorted(lines, key=lambda line: line[3])
