"""What the side-by-side benchmarks share: a Kafka for the run, and an earlier commit beside
this checkout."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def kafka(tmp: Path) -> Iterator[str]:
    """``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS``, or a local Kafka node started in ``tmp`` for the run."""
    given = os.environ.get("DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    from dramatiq_kafka import localkafka

    cluster = localkafka.start_single(tmp / "kafka")
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.stop()


@contextmanager
def checkout(ref: str | None, tmp: Path) -> Iterator[Path | None]:
    """A temporary git worktree of ``ref`` (``None`` without one), removed afterwards."""
    if ref is None:
        yield None
        return
    path = tmp / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), ref], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
