"""A share group's settings, read and prepared once per process before its first consumer.

A share group starts at the *latest* offset unless its config
``share.auto.offset.reset`` says ``earliest``: a job queue would skip every job sent
before its first worker.  :func:`prepare_share_group` sets it through the admin
client when it is not so (checked at each worker start), and reads the record lock
and the delivery limit the consumer plans with (``share_records.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from dramatiq.logging import get_logger

from .errors import ConfigurationError, KafkaConnectionError

__all__ = ["ShareGroupSettings", "ShareGroups", "prepare_share_group", "share_group_id"]

#: Kafka's defaults (``group.share.record.lock.duration.ms``, ``group.share.delivery.count.limit``).
DEFAULT_LOCK_MS = 30_000
DEFAULT_DELIVERY_LIMIT = 5


@dataclass(frozen=True)
class ShareGroupSettings:
    """What a share group's config says, as the consumers need it.

    Parameters:
      group_id(str): The share group.
      lock_ms(int): ``share.record.lock.duration.ms``: how long a record is lent.
      delivery_limit(int): ``share.delivery.count.limit``: deliveries before Kafka
        archives a record never accepted.
      set_earliest(bool): Whether this call set ``share.auto.offset.reset`` to ``earliest``.
    """

    group_id: str
    lock_ms: int
    delivery_limit: int
    set_earliest: bool = False


def share_group_id(share_group: bool | str, group_id: str) -> str:
    """The share group of a queue's ``QueueConfig(share_group=...)``."""
    return share_group if isinstance(share_group, str) else f"{group_id}.share"


def _entries(admin: AdminClient, group_id: str, timeout: float) -> dict[str, str]:
    resource = ConfigResource(ResourceType.GROUP, group_id)
    try:
        found = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    except KafkaException as e:
        raise KafkaConnectionError(f"Could not read the config of share group {group_id!r}: {e}") from None
    return {name: entry.value for name, entry in found.items() if entry.value is not None}


def prepare_share_group(admin: AdminClient, group_id: str, *, timeout: float = 10.0) -> ShareGroupSettings:
    """Make ``group_id`` start at the earliest offset and read its lock and delivery limit.

    Raises:
      ConfigurationError: When Kafka refuses to set ``share.auto.offset.reset``
        (an ACL, a Kafka without share groups): the jobs sent before the first
        worker would be skipped.
      KafkaConnectionError: When the group's config cannot be read.
    """
    entries = _entries(admin, group_id, timeout)
    set_earliest = entries.get("share.auto.offset.reset") != "earliest"
    if set_earliest:
        resource = ConfigResource(
            ResourceType.GROUP,
            group_id,
            incremental_configs=[
                ConfigEntry(
                    "share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        try:
            for future in admin.incremental_alter_configs([resource], request_timeout=timeout).values():
                future.result()
        except KafkaException as e:
            raise ConfigurationError(
                f"Could not set share.auto.offset.reset=earliest on share group {group_id!r} ({e}); "
                "without it the group starts at the latest offset and skips the jobs sent before its "
                "first worker. Set it yourself (kafka-configs.sh --bootstrap-server ... --alter "
                f"--entity-type groups --entity-name {group_id} --add-config "
                "share.auto.offset.reset=earliest), or let the workers' principal alter the group's "
                "config (ALTER_CONFIGS on the group). Share groups need Kafka 4.2 or later."
            ) from None
    return ShareGroupSettings(
        group_id=group_id,
        lock_ms=int(entries.get("share.record.lock.duration.ms", DEFAULT_LOCK_MS)),
        delivery_limit=int(entries.get("share.delivery.count.limit", DEFAULT_DELIVERY_LIMIT)),
        set_earliest=set_earliest,
    )


class ShareGroups:
    """The share groups of a broker's queues, each prepared once per process.

    Parameters:
      admin(Callable[[], AdminClient]): The broker's admin client.
      timeout(float): Seconds a request to Kafka may take.
    """

    def __init__(self, admin: Callable[[], AdminClient], *, timeout: float) -> None:
        self.logger = get_logger(__name__, type(self))
        self._admin = admin
        self.timeout = timeout
        self._prepared: dict[str, ShareGroupSettings] = {}
        self._lock = threading.Lock()

    def settings(self, group_id: str) -> ShareGroupSettings:
        """``group_id``'s settings, prepared at the first call (see :func:`prepare_share_group`)."""
        with self._lock:
            found = self._prepared.get(group_id)
            if found is None:
                found = self._prepared[group_id] = prepare_share_group(
                    self._admin(), group_id, timeout=self.timeout
                )
                self.logger.info(
                    "Share group %r: records are lent for %d ms (share.record.lock.duration.ms), "
                    "delivered at most %d times (share.delivery.count.limit)%s.",
                    group_id,
                    found.lock_ms,
                    found.delivery_limit,
                    "; share.auto.offset.reset set to earliest" if found.set_earliest else "",
                )
            return found
