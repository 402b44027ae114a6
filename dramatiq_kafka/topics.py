"""Topic names: a queue's topic, its delay topic and its dead-letter topic.

Every name is ``{prefix}{queue}``: the queue's topic, ``{prefix}{queue}.DQ``
its delay topic (Dramatiq's ``dq_name``), and ``{prefix}{queue}.XQ`` (or the
topic its ``DeadLetter`` names) its dead-letter topic.  The broker, the
command, the metrics and the dashboard take them from here (through
``topology.py``, which knows each queue's ``QueueConfig``), as well as the
settings a queue's topics are created with.  Creating them is ``admin.py``'s.
"""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from dramatiq.common import q_name

from .queue_config import QueueConfig

#: The suffix of a dead-letter topic (after the queue's name, before any prefix).
DEAD_LETTER_SUFFIX = ".XQ"
#: The suffix of a delay queue and its topic (Dramatiq's ``dq_name``).
DELAY_SUFFIX = ".DQ"


def topic_name(prefix: str, queue_name: str) -> str:
    """The topic that holds a queue (or a delay queue)."""
    return f"{prefix}{queue_name}"


def dead_letter_topic_name(prefix: str, queue_name: str, topic: str | None = None) -> str:
    """The dead-letter topic of a queue (or of its delay queue): ``topic``
    when its ``DeadLetter`` names one, else ``{queue}.XQ``; prefixed."""
    return prefix + (topic or f"{q_name(queue_name)}{DEAD_LETTER_SUFFIX}")


def queue_of(prefix: str, topic: str) -> str | None:
    """The queue a topic's name reveals (``{prefix}q``, ``q.DQ``, ``q.XQ``
    all give ``q``), or ``None`` for a topic of no queue."""
    if not topic.startswith(prefix) or topic.startswith("__"):
        return None
    name = topic[len(prefix) :]
    for suffix in (DELAY_SUFFIX, DEAD_LETTER_SUFFIX):
        name = name.removesuffix(suffix)
    return name


class QueueTopics(NamedTuple):
    """The three topics of a queue."""

    queue: str
    delay: str
    dead_letters: str

    def kinds(self) -> tuple[tuple[str, str], ...]:
        """``(kind, topic)`` of each, as the command lists them."""
        return (("queue", self.queue), ("delay", self.delay), ("dead letters", self.dead_letters))


def topic_specs(config: QueueConfig, topics: QueueTopics, *, delay_partitions: int) -> dict[str, NewTopic]:
    """How a queue's topics are created: ``config``'s partitions (the
    cluster's default when unset), at least ``delay_partitions`` for the
    delay topic (a partition per delay tier), its replication factor and
    topic settings.

    Parameters:
      config(QueueConfig): The queue's settings.
      topics(QueueTopics): Its topics' names.
      delay_partitions(int): The fewest partitions of a delay topic.
    """
    partitions = {
        topics.queue: config.partitions,
        topics.delay: max(config.partitions or 0, delay_partitions),
        topics.dead_letters: config.partitions,
    }
    return {
        topic: NewTopic(
            topic,
            num_partitions=count or -1,
            replication_factor=config.replication_factor or -1,
            config=dict(config.topic_config),
        )
        for topic, count in partitions.items()
    }
