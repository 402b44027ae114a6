#!/usr/bin/env python3
"""The local Kafka's command line, runnable before any virtualenv exists.

The launcher lives in the package (``dramatiq_kafka/localkafka.py``, standard library only); this
wrapper runs that file by path so that ``python3 scripts/localkafka.py fetch|start|stop|status``
works without installing anything.  From Python, ``from dramatiq_kafka import localkafka``.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    # Loaded by path, not imported: dramatiq_kafka/__init__.py needs confluent-kafka.
    launcher = Path(__file__).resolve().parent.parent / "dramatiq_kafka" / "localkafka.py"
    sys.argv[0] = str(launcher)
    runpy.run_path(str(launcher), run_name="__main__")
