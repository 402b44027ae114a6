"""The tools a node needs from the machine: Java always, Maven until the jars are cached.

Fetching the jars with Maven is ``jars.py``'s job.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import LocalKafkaError
from .jars import _libs_dir, jars_present
from .settings import KAFKA_VERSION


def check_tools(libs: Path | None = None) -> None:
    """Raise :class:`LocalKafkaError` naming everything missing to start a node: Java always, Maven
    only while the jars are not in ``libs`` (default ``LIBS_DIR``) yet."""
    missing = []
    try:
        java_executable()
    except LocalKafkaError as exc:
        missing.append(str(exc))
    target = libs if libs is not None else _libs_dir()
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
