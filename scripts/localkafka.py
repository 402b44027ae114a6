#!/usr/bin/env python3
"""The local Kafka's command line, runnable before any virtualenv exists.

The launcher lives in the package (``dramatiq_kafka/localkafka/``, standard library only); this
wrapper loads that package by path so that ``python3 scripts/localkafka.py fetch|start|stop|status``
works without installing anything.  From Python, ``from dramatiq_kafka import localkafka``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent.parent / "dramatiq_kafka" / "localkafka"


def load_launcher() -> ModuleType:
    """Import ``dramatiq_kafka/localkafka/`` as the top-level package ``localkafka``.

    Loaded by path, not imported: dramatiq_kafka/__init__.py needs confluent-kafka.
    """
    spec = importlib.util.spec_from_file_location(
        "localkafka", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the local Kafka launcher from {PACKAGE}")
    launcher = importlib.util.module_from_spec(spec)
    # Registered before it runs, so that its relative imports (from .settings import ...) find it.
    sys.modules[spec.name] = launcher
    spec.loader.exec_module(launcher)
    return launcher


if __name__ == "__main__":
    sys.exit(load_launcher().main())
