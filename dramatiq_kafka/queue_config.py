"""Per-queue settings: the topic layout and where dead letters go.

``QueueConfig`` and ``DeadLetter``, and the checks of the broker's own
settings, all at construction.  The options of actors and messages (and
the levels they merge from) are ``options.py``'s; the topics' names are
``topics.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

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
        if self.max_retries is not None and not _is_int(self.max_retries, 0):
            raise ConfigurationError(
                f"DeadLetter(max_retries={self.max_retries!r}): must be a whole number >= 0"
            )
        if self.topic is not None and (not isinstance(self.topic, str) or not self.topic.strip()):
            raise ConfigurationError(f"DeadLetter(topic={self.topic!r}): must be a non-empty topic name")
        if not isinstance(self.independent, bool):
            raise ConfigurationError(f"DeadLetter(independent={self.independent!r}): must be True or False")


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
      share_group(bool | str): Consume the queue through a Kafka share group
        (KIP-932, Kafka 4.2+) instead of the workers' consumer group: every
        worker fetches from every partition and each record is acknowledged by
        itself, so the queue's parallelism is not capped by its partitions and a
        failing job holds nothing up; no order, even by ``partition_key``.
        ``True``: the share group ``{group_id}.share``; a string names the group.
        Retries are always sent again with their backoff (as ``retry_mode=
        "requeue"``; ``retry_mode`` is not used).  See ``docs/share-groups.md``.
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
    share_group: bool | str = False

    def __post_init__(self) -> None:
        if self.partitions is not None and not _is_int(self.partitions, 1):
            raise ConfigurationError(
                f"QueueConfig(partitions={self.partitions!r}): must be a whole number >= 1"
            )
        if self.replication_factor is not None and not _is_int(self.replication_factor, 1):
            raise ConfigurationError(
                f"QueueConfig(replication_factor={self.replication_factor!r}): must be a whole number >= 1"
            )
        # Frozen: the coerced values are set the way dataclasses set fields.
        object.__setattr__(self, "topic_config", _topic_config(self.topic_config))
        if isinstance(self.dead_letter, Mapping):
            object.__setattr__(
                self, "dead_letter", dead_letter_of(self.dead_letter, "QueueConfig(dead_letter)")
            )
        elif not isinstance(self.dead_letter, DeadLetter | Unset | None):
            raise ConfigurationError(
                f"QueueConfig(dead_letter={self.dead_letter!r}): must be a DeadLetter, a dict of its "
                "settings, or None"
            )
        if not isinstance(self.ordered, bool):
            raise ConfigurationError(f"QueueConfig(ordered={self.ordered!r}): must be True or False")
        _check_share_group(self)
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


def _check_share_group(config: QueueConfig) -> None:
    share_group = config.share_group
    if not isinstance(share_group, bool | str) or (isinstance(share_group, str) and not share_group.strip()):
        raise ConfigurationError(
            f"QueueConfig(share_group={share_group!r}): must be True, False or the share group's id"
        )
    if share_group is not False and config.ordered:
        raise ConfigurationError(
            f"QueueConfig(share_group={share_group!r}, ordered=True): a share group hands the records of "
            "one partition to many workers at once, so it cannot keep them in order. Drop ordered=True, "
            "or consume the queue through the consumer group (share_group=False)."
        )


def _is_int(value: Any, least: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _topic_config(value: Any) -> dict[str, str]:
    """Topic settings as Kafka takes them (strings); numbers and booleans are written out."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"QueueConfig(topic_config={value!r}): must be a dict of topic settings")
    config: dict[str, str] = {}
    for name, setting in value.items():
        if not isinstance(name, str):
            raise ConfigurationError(f"QueueConfig(topic_config): the setting name {name!r} is not a string")
        if isinstance(setting, bool):
            setting = "true" if setting else "false"
        elif isinstance(setting, int | float):
            setting = str(setting)
        if not isinstance(setting, str):
            raise ConfigurationError(
                f"QueueConfig(topic_config): {name}={setting!r} must be a string, a number or a boolean"
            )
        config[name] = setting
    return config


def _from_mapping(kind: type[Any], value: Mapping[Any, Any], key: str) -> Any:
    names = [f.name for f in fields(kind)]
    unknown = [name for name in value if name not in names]
    if unknown:
        raise ConfigurationError(
            f"{key}: unknown {kind.__name__} setting(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(names)}"
        )
    try:
        return kind(**value)
    except ConfigurationError as e:
        raise ConfigurationError(f"{key}: {e}") from None


def dead_letter_of(value: Any, key: str) -> DeadLetter | None:
    """A :class:`DeadLetter` from itself, ``None`` or a plain dict of its
    settings (as Django settings hold them).

    Raises:
      ConfigurationError: Naming ``key`` when the value or one of its
        settings has the wrong type.
    """
    if value is None or isinstance(value, DeadLetter):
        return value
    if isinstance(value, Mapping):
        return _from_mapping(DeadLetter, value, key)  # type: ignore[no-any-return]
    raise ConfigurationError(f"{key}={value!r}: must be a DeadLetter, a dict of its settings, or None")


def queue_config_of(value: Any, key: str) -> QueueConfig:
    """A :class:`QueueConfig` from itself or a plain dict of its settings.

    Raises:
      ConfigurationError: Naming ``key`` when the value or one of its
        settings has the wrong type.
    """
    if isinstance(value, QueueConfig):
        return value
    if isinstance(value, Mapping):
        return _from_mapping(QueueConfig, value, key)  # type: ignore[no-any-return]
    raise ConfigurationError(f"{key}={value!r}: must be a QueueConfig or a dict of its settings")


#: The type of each plain ``KafkaBroker`` setting, and how to say it in an error.
_BROKER_SETTINGS: dict[str, tuple[tuple[type, ...], str]] = {
    "bootstrap_servers": ((str, type(None)), "a string 'host:port[,host:port]'"),
    "group_id": ((str,), "a string"),
    "topic_prefix": ((str,), "a string"),
    "config": ((dict, type(None)), "a dict of librdkafka settings"),
    "producer_config": ((dict, type(None)), "a dict of librdkafka settings"),
    "consumer_config": ((dict, type(None)), "a dict of librdkafka settings"),
    "queues": ((dict, type(None)), "a dict of queue names to QueueConfig (or dicts of its settings)"),
    "create_topics": ((bool,), "True or False"),
    "fail_fast_default": ((bool,), "True or False"),
    "request_timeout": ((int, float), "a positive number of seconds"),
}


def check_broker_settings(settings: Mapping[str, Any]) -> None:
    """Check the type of every plain ``KafkaBroker`` setting given.

    Raises:
      ConfigurationError: Naming the first setting of the wrong type.
    """
    for key, value in settings.items():
        types, expected = _BROKER_SETTINGS[key]
        wrong = not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        if key == "request_timeout" and not wrong:
            wrong = value <= 0
        if key == "group_id" and not wrong:
            wrong = not value.strip()
        if wrong:
            raise ConfigurationError(f"KafkaBroker({key}={value!r}): must be {expected}")
        if isinstance(value, dict) and key.endswith("config"):
            for name in value:
                if not isinstance(name, str):
                    raise ConfigurationError(f"KafkaBroker({key}): the setting name {name!r} is not a string")
    _check_group_protocol(settings)


#: Settings of the classic group protocol that librdkafka refuses with KIP-848's, where the
#: broker sets them: it does so only when a worker creates its consumer.
CLASSIC_ONLY_SETTINGS = {
    "session.timeout.ms": "the broker sets it (group.consumer.session.timeout.ms, or the group's "
    "consumer.session.timeout.ms)",
    "heartbeat.interval.ms": "the broker sets it (group.consumer.heartbeat.interval.ms, or the "
    "group's consumer.heartbeat.interval.ms)",
    "partition.assignment.strategy": "the broker assigns; choose its assignor with group.remote.assignor",
    "group.protocol.type": "it belongs to the classic protocol",
}


def _check_group_protocol(settings: Mapping[str, Any]) -> None:
    merged = {**(settings.get("config") or {}), **(settings.get("consumer_config") or {})}
    if merged.get("group.protocol") != "consumer":
        return
    for where in ("config", "consumer_config"):
        for name in settings.get(where) or {}:
            if name in CLASSIC_ONLY_SETTINGS:
                raise ConfigurationError(
                    f"KafkaBroker({where}): {name!r} does not apply with group.protocol='consumer': "
                    f"{CLASSIC_ONLY_SETTINGS[name]}. Remove it."
                )
