"""librdkafka's own log lines, through Python logging.

Left alone, librdkafka writes its log to stderr in its own format
(``%3|1700000000.123|FAIL|rdkafka#producer-1| ... Connection refused``),
where no logging configuration reaches it, and repeats a failing connection
every retry: about 200 lines in the 10 s a send waited for an unreachable
Kafka.  Every client of this package gets a :class:`ClientLog` as its
``logger`` setting instead: the lines go to the ``dramatiq_kafka.librdkafka``
logger, at the level confluent-kafka maps from librdkafka's syslog level
(0-2 CRITICAL, 3 ERROR, 4 WARNING, 5-6 INFO, 7 DEBUG), and a line that
repeats within :data:`REPEAT_WINDOW` seconds is counted instead of logged
again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
from dramatiq.logging import get_logger

from .errors import ConfigurationError

T = TypeVar("T")

#: Seconds during which a repeated line is counted, not logged.
REPEAT_WINDOW = 60.0
#: The most distinct lines remembered; the oldest are forgotten first.
MAX_REMEMBERED = 256

# librdkafka quotes setting values in some messages: `Invalid value "x" for
# configuration property "sasl.password"`, `Configuration property ... set to
# `x` but ...`.  A value may be a secret: it never reaches a log or an error.
_QUOTED_VALUES = (
    (
        re.compile(r'Invalid value "[^"]*" for configuration property'),
        "Invalid value for configuration property",
    ),
    (re.compile(r"set to `[^`]*`"), "set to a value"),
)


def redact(text: str) -> str:
    """librdkafka's message without the setting values it quotes."""
    for pattern, replacement in _QUOTED_VALUES:
        text = pattern.sub(replacement, text)
    return text


# "after 0ms in state CONNECT", "3 identical error(s) suppressed", ports and
# timestamps vary between repeats of the same complaint.
_NUMBERS = re.compile(r"\d+")


class ClientLog:
    """The ``logger`` of one or several librdkafka clients.

    confluent-kafka calls ``log(level, "%s [%s] %s", facility, client, text)``
    from whichever thread serves the client's queue (``poll()``), so this is
    thread-safe.

    Parameters:
      client(str): What the client is, for the log lines (``"producer"``).
      window(float): Seconds during which a repeated line is only counted.
    """

    def __init__(self, client: str, *, window: float = REPEAT_WINDOW) -> None:
        self.logger = get_logger("dramatiq_kafka", "librdkafka")
        self.client = client
        self.window = window
        self._lock = threading.Lock()
        # normalized line -> (first logged at, repeats counted since)
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        text = redact(msg % args if args else msg)
        if not self.logger.isEnabledFor(level):
            return
        key = (level, _NUMBERS.sub("#", text))
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window:
                self._seen[key] = (seen[0], seen[1] + 1)
                return
            repeats = seen[1] if seen is not None else 0
            self._seen.pop(key, None)
            self._seen[key] = (now, 0)
            while len(self._seen) > MAX_REMEMBERED:
                del self._seen[next(iter(self._seen))]
        if repeats:
            self.logger.log(
                level,
                "%s: %s (and %d more like it in the last %g s)",
                self.client,
                text,
                repeats,
                self.window,
            )
        else:
            self.logger.log(level, "%s: %s", self.client, text)

    def repeats(self) -> int:
        """Lines counted but not logged since they were last logged."""
        with self._lock:
            return sum(count for _, count in self._seen.values())


def create_client(factory: Callable[[dict[str, Any]], T], config: dict[str, Any], client: str) -> T:
    """``factory(config)`` with a :class:`ClientLog`, refused settings named
    without their values.

    Raises:
      ConfigurationError: When librdkafka refuses a setting (unknown, or
        a value it does not take).
    """
    try:
        return factory(with_log(config, client))
    except KafkaException as e:
        error = e.args[0] if e.args else e
        text = error.str() if isinstance(error, KafkaError) else str(error)
        raise ConfigurationError(f"Kafka {client} settings refused: {redact(text)}") from None


def with_log(config: dict[str, Any], client: str) -> dict[str, Any]:
    """``config`` with a :class:`ClientLog` as its ``logger``, unless the user gave one."""
    if "logger" in config:
        return dict(config)
    return {**config, "logger": ClientLog(client)}
