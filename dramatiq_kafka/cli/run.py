"""Running a command: parse, connect, run, and map its errors to exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from confluent_kafka import KafkaError, KafkaException

from ..client_log import redact
from ..errors import ConfigurationError, KafkaBrokerError, KafkaConnectionError
from .connection import make_context
from .exits import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE, UsageError
from .parser import build_parser

#: The exit code of each error a command ends with: the first that matches.
ERROR_EXITS: tuple[tuple[type[Exception], int], ...] = (
    (UsageError, EXIT_USAGE),
    (KafkaConnectionError, EXIT_UNREACHABLE),
    # A setting librdkafka refuses (named without its value): bad usage.
    (ConfigurationError, EXIT_USAGE),
    (KafkaBrokerError, EXIT_FAILED),
)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; return its exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        ctx = make_context(args, out, err)
        code = int(args.run(args, ctx))
        # Here, not at exit: a closed pipe must come out as BrokenPipeError below.
        out.flush()
        return code
    except (UsageError, KafkaBrokerError) as e:
        err.write(f"dramatiq-kafka: error: {e}\n")
        return next(code for kind, code in ERROR_EXITS if isinstance(e, kind))
    except KafkaException as e:
        error = e.args[0] if e.args else e
        text = getattr(error, "str", lambda: str(error))()
        err.write(f"dramatiq-kafka: error: {redact(text)}\n")
        invalid = isinstance(error, KafkaError) and error.code() == KafkaError._INVALID_ARG
        return EXIT_USAGE if invalid else EXIT_FAILED
    except KeyboardInterrupt:
        err.write("dramatiq-kafka: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `dramatiq-kafka lag | head`: the reader has what it wanted.  Later
        # writes (the interpreter's final flush) go nowhere instead of raising.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
