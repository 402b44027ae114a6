"""How a command ends: its exit codes, and the error of bad usage.

Exit codes: 0 success; 1 the command failed (a topic missing, a replay
not acknowledged); 2 bad usage (options, config file, broker module);
3 Kafka is not reachable; 130 interrupted; 141 stdout was closed
(``| head``), quietly.  Mapping errors to them is ``run.py``.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: A closed pipe on stdout: the shell's code for a process ended by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13
#: Ctrl-C: the shell's code for SIGINT.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad options, an unreadable config file, a broker module that does not load."""
