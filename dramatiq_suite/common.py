"""What Dramatiq's tests import from their ``tests/common.py`` (not in Dramatiq's sdist)."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dramatiq import Worker
from dramatiq.threading import is_gevent_active
from pika.credentials import PlainCredentials

__all__ = [
    "RABBITMQ_CREDENTIALS",
    "skip_in_ci",
    "skip_on_pypy",
    "skip_on_windows",
    "skip_with_gevent",
    "skip_without_gevent",
    "worker",
]


@contextmanager
def worker(*args: Any, **kwargs: Any) -> Iterator[Worker]:
    """A started ``Worker(*args, **kwargs)``, stopped when the block ends."""
    running = Worker(*args, **kwargs)
    running.start()
    try:
        yield running
    finally:
        running.stop()


# Dramatiq skips these in its own CI (GitHub Actions, AppVeyor): so do we, under the same names.
skip_in_ci = pytest.mark.skipif(
    os.getenv("APPVEYOR") is not None or os.getenv("GITHUB_ACTION") is not None,
    reason="test skipped in CI",
)
skip_on_windows = pytest.mark.skipif(platform.system() == "Windows", reason="test skipped on Windows")
skip_on_pypy = pytest.mark.skipif(
    platform.python_implementation() == "PyPy", reason="Time limits are not supported under PyPy."
)
skip_with_gevent = pytest.mark.skipif(is_gevent_active(), reason="Behaviour with gevent is different.")
skip_without_gevent = pytest.mark.skipif(
    not is_gevent_active(), reason="Behaviour without gevent is different."
)

# Some tests build a RabbitmqBroker without connecting to it (middleware lists, defaults).
RABBITMQ_CREDENTIALS = PlainCredentials(
    os.getenv("RABBITMQ_USERNAME", "guest"), os.getenv("RABBITMQ_PASSWORD", "guest")
)
