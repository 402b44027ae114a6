"""Per-queue settings: the topic layout and where dead letters go."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigurationError
from .options import PartitionKey, check_options

#: The retry modes a queue can choose.
RETRY_MODES = ("pause", "requeue")
#: Where a consumer group with no committed offset on a partition starts.
GROUP_STARTS = ("earliest", "latest")


def check_group_start(value: object, where: str) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is one of :data:`GROUP_STARTS`."""
    if value not in GROUP_STARTS:
        allowed = ", ".join(map(repr, GROUP_STARTS))
        raise ConfigurationError(f"{where}(new_group_start={value!r}): must be one of {allowed}")


@dataclass(frozen=True)
class DeadLetter:
    """Where the jobs that cannot succeed end up.

    Parameters:
      topic(str): The dead-letter topic, without the broker's
        ``topic_prefix``.  Defaults to ``{queue}.XQ``.
      max_retries(int): How many times a failed job is retried before
        it is dead-lettered, unless the actor or message sets
        ``max_retries``.  ``None`` leaves it to the next level (default 3).
      independent(bool): Whether each job gets its own retry budget.  By
        default the budget belongs to the partition: it is spent by every
        failure and refilled only when a job succeeds at its first run, so
        a partition where each retry fails on the next job still ends in
        the dead-letter topic.
    """

    topic: str | None = None
    max_retries: int | None = None
    independent: bool = False

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigurationError(f"DeadLetter(max_retries={self.max_retries!r}): must be 0 or more")
        if self.topic is not None and not self.topic.strip():
            raise ConfigurationError("DeadLetter(topic=''): the topic name must not be empty")


class Unset:
    """The value of a setting left to the broker's default."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


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
      dead_letter(DeadLetter): Where failed jobs go.  Unset, the broker's
        default; ``None``, nowhere: a failing job is retried until it
        succeeds.
      ordered(bool): Run one job per partition at a time.  Otherwise the
        jobs of a partition run concurrently, except jobs sharing a key.
      min_backoff(int): Milliseconds before the first retry (default 1000).
      max_backoff(int): The longest wait between retries, in milliseconds
        (default 60000): the partition waits that long.
      retry_mode(str): ``"pause"`` (default): a failed job's partition
        waits out the backoff and runs it again in place, so nothing
        behind it starts meanwhile.  ``"requeue"``: the failed job is sent
        again with the backoff as a delay (Dramatiq's way) and its
        partition moves on, so one poison job never holds it up, at the
        price of order.  Both dead-letter after ``max_retries``.
      delay_buffer(int): Delayed records of the delay topic held in
        memory per partition until they are due (default 1000); a full
        partition pauses its fetching.  Bounds the worker's memory
        whatever the number of delayed jobs (see ``docs/delays.md``).
      new_group_start(str): Where a consumer group that never committed on
        a partition of this queue starts: ``"earliest"`` (every record
        kept, the default) or ``"latest"`` (only jobs sent from then on).
        ``None``: the broker's.  See ``docs/migration.md``.
      dispatch_method, dispatch_many_method, sync_timeout, partition_key:
        Defaults of the actor options of the same names for the queue's
        actors (``None``: the broker's).
    """

    partitions: int | None = None
    replication_factor: int | None = None
    topic_config: dict[str, str] = field(default_factory=dict)
    dead_letter: DeadLetter | Unset | None = UNSET
    ordered: bool = False
    min_backoff: int | None = None
    max_backoff: int | None = None
    retry_mode: str = "pause"
    delay_buffer: int = 1000
    new_group_start: str | None = None
    dispatch_method: str | None = None
    dispatch_many_method: str | None = None
    sync_timeout: float | None = None
    partition_key: PartitionKey | None = None

    def __post_init__(self) -> None:
        if self.partitions is not None and self.partitions < 1:
            raise ConfigurationError(f"QueueConfig(partitions={self.partitions!r}): must be 1 or more")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise ConfigurationError(
                f"QueueConfig(replication_factor={self.replication_factor!r}): must be 1 or more"
            )
        if self.retry_mode not in RETRY_MODES:
            allowed = ", ".join(map(repr, RETRY_MODES))
            raise ConfigurationError(f"QueueConfig(retry_mode={self.retry_mode!r}): must be one of {allowed}")
        if self.new_group_start is not None:
            check_group_start(self.new_group_start, "QueueConfig")
        if (
            isinstance(self.delay_buffer, bool)
            or not isinstance(self.delay_buffer, int)
            or self.delay_buffer < 1
        ):
            raise ConfigurationError(f"QueueConfig(delay_buffer={self.delay_buffer!r}): must be 1 or more")
        check_options(
            {
                "dispatch_method": self.dispatch_method,
                "dispatch_many_method": self.dispatch_many_method,
                "sync_timeout": self.sync_timeout,
                "partition_key": self.partition_key,
            },
            "QueueConfig",
        )
        for name in ("min_backoff", "max_backoff"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigurationError(
                    f"QueueConfig({name}={value!r}): must be a number of milliseconds >= 0"
                )
