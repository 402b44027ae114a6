"""The errors the local Kafka raises, all under ``LocalKafkaError``.

They are not under the broker's ``KafkaBrokerError`` (``dramatiq_kafka/errors.py``): this package
runs without the rest of ``dramatiq_kafka`` (``scripts/localkafka.py``).  Their public name is on
the package, ``dramatiq_kafka.localkafka.KafkaStartError`` (``__init__.py`` sets their ``__module__``).
"""

from __future__ import annotations


class LocalKafkaError(RuntimeError):
    """Base class of the errors raised here."""


class KafkaFetchError(LocalKafkaError):
    """Maven could not fetch the Kafka jars."""


class KafkaStartError(LocalKafkaError):
    """A node could not be formatted or did not become ready; the message ends with its log tail."""


class KafkaExitedError(KafkaStartError):
    """A JVM exited before it was ready (for instance because a port was taken meanwhile)."""
