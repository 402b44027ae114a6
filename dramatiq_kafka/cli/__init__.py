"""The ``dramatiq-kafka`` command: topics, lag, dead letters, the dashboard.

One module per job: ``connection.py`` (servers, settings, the broker
module, topic names), ``properties.py`` (the ``--config`` file),
``output.py`` (tables, JSON, progress), a module per command family
(``queues.py``: ``topics``, ``topics ensure``, ``lag``; ``dlq.py``: ``dlq
show``, ``dlq replay``; ``web.py``: ``web``), ``parser.py`` (the options),
``run.py`` (:func:`main`: running a command, its errors as exit codes,
listed in ``exits.py``).
"""

from .connection import DEFAULT_PORT, Context, check_reachable, load_broker, make_context, with_default_ports
from .dlq import describe, filters_of, parse_offsets
from .exits import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
)
from .output import ProgressBar, print_json, print_table
from .parser import build_parser
from .properties import parse_properties, read_properties
from .run import main

__all__ = [
    "DEFAULT_PORT",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Context",
    "ProgressBar",
    "UsageError",
    "build_parser",
    "check_reachable",
    "describe",
    "filters_of",
    "load_broker",
    "main",
    "make_context",
    "parse_offsets",
    "parse_properties",
    "print_json",
    "print_table",
    "read_properties",
    "with_default_ports",
]
