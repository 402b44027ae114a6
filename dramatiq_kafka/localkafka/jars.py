"""The Kafka jars: where they are cached, whether they are there, and fetching them with Maven.

Maven runs ``kafka-pom.xml`` (``settings.POM``, in ``dramatiq_kafka/``).  Whether ``java`` and
``mvn`` are there is ``tools.py``'s question.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import KafkaFetchError
from .settings import KAFKA_VERSION, LIBS_ENV, POM, SCALA_VERSION
from .system import _die_with_parent, _tail


def default_libs_dir() -> Path:
    """Return ``$DRAMATIQ_KAFKA_LIBS``, else ``~/.cache/dramatiq-kafka/kafka-<version>/libs``."""
    override = os.environ.get(LIBS_ENV)
    if override:
        # Absolute, because it becomes a "DIR/*" classpath.
        return Path(override).expanduser().resolve()
    return Path.home() / ".cache" / "dramatiq-kafka" / f"kafka-{KAFKA_VERSION}" / "libs"


def _libs_dir() -> Path:
    """Return the package's ``LIBS_DIR``, the jar dir used when none is given.

    Read at each call, from the package (``__init__.py`` sets it), so that setting
    ``localkafka.LIBS_DIR`` (as a test does) reaches every function that defaults to it.
    """
    from . import LIBS_DIR

    return LIBS_DIR


def jars_present(libs: Path) -> bool:
    """Tell whether ``libs`` holds the Kafka core jar (a dir only gets its final name once complete)."""
    return any(libs.glob(f"kafka_{SCALA_VERSION}-*.jar"))


def fetch_jars(libs: Path | None = None) -> Path:
    """Fetch the broker jars into ``libs`` (default ``LIBS_DIR``) unless they are there; return the dir.

    Maven writes into a temporary sibling dir that is renamed at the end, so an interrupted fetch never
    leaves a half-filled dir that would pass for complete.
    """
    target = libs if libs is not None else _libs_dir()
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
