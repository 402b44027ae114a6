"""Per-queue settings: the topic layout and where dead letters go."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigurationError


@dataclass(frozen=True)
class DeadLetter:
    """Where the jobs that cannot succeed end up.

    Parameters:
      topic(str): The dead-letter topic, without the broker's
        ``topic_prefix``.  Defaults to ``{queue}.XQ``.
      max_retries(int): How many times a failed job is retried before
        it is dead-lettered.  ``None`` leaves it to Dramatiq's own
        ``max_retries`` option.
      independent(bool): Whether each job gets its own retry budget
        (reserved for the partition-pause retries).
    """

    topic: str | None = None
    max_retries: int | None = None
    independent: bool = False

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigurationError(f"DeadLetter(max_retries={self.max_retries!r}): must be 0 or more")
        if self.topic is not None and not self.topic.strip():
            raise ConfigurationError("DeadLetter(topic=''): the topic name must not be empty")


@dataclass(frozen=True)
class QueueConfig:
    """How a queue's topic is laid out and consumed.

    Parameters:
      partitions(int): Partitions of the topic when it is created.
        ``None`` takes the cluster's ``num.partitions``.
      replication_factor(int): Replicas of the topic when it is
        created.  ``None`` takes the cluster's
        ``default.replication.factor``.
      topic_config(dict[str, str]): Topic-level settings used when the
        topic is created (``retention.ms``, ``min.insync.replicas``...).
      dead_letter(DeadLetter): Where failed jobs go.  ``None`` keeps
        the broker's default.
    """

    partitions: int | None = None
    replication_factor: int | None = None
    topic_config: dict[str, str] = field(default_factory=dict)
    dead_letter: DeadLetter | None = None

    def __post_init__(self) -> None:
        if self.partitions is not None and self.partitions < 1:
            raise ConfigurationError(f"QueueConfig(partitions={self.partitions!r}): must be 1 or more")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise ConfigurationError(
                f"QueueConfig(replication_factor={self.replication_factor!r}): must be 1 or more"
            )
