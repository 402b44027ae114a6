"""What a rebalance does to a group member's consumers: assignment, revocation, loss.

librdkafka calls these on the member's thread, inside its poll.  An assignment
tells each consumer its partitions; a revocation lets the partitions' running
jobs finish within the grace period, commits what finished and lets the
partitions go; a loss (the group moved on without this member) commits
nothing, since another member may own the partitions already, and is
remembered: a member that never rejoins gets a new client (``group.py``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord

if TYPE_CHECKING:
    from .topic_partitions import TopicConsumer

__all__ = ["Rebalances", "by_topic"]


class Rebalances:
    """The rebalance callbacks of one group member.

    Parameters:
      routes(callable): The member's consumers by topic, now.
      subscribed(callable): The topics the member subscribed to.
      commit(callable): Commits offsets synchronously (the member's ``commit``).
      logger: The member's logger.
    """

    def __init__(
        self,
        *,
        routes: Callable[[], dict[str, TopicConsumer]],
        subscribed: Callable[[], Iterable[str]],
        commit: Callable[[list[TopicPartition]], None],
        logger: Any,
    ) -> None:
        self.routes = routes
        self.subscribed = subscribed
        self.commit = commit
        self.logger = logger
        #: When the group took the member's partitions without a revocation;
        #: ``None`` while it is (or is becoming) a member.
        self.lost_at: float | None = None

    def assigned(self, client: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        # Even an empty assignment means the member joined a generation.
        self.lost_at = None
        partitions_of = by_topic(partitions)
        subscribed = set(self.subscribed())
        for topic, consumer in self.routes().items():
            if topic in subscribed:
                consumer.partitions.assigned(sorted(tp.partition for tp in partitions_of.get(topic, [])))

    def revoked(self, client: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        routes = self.routes()
        revoking = []
        for topic, tps in by_topic(partitions).items():
            numbers = [tp.partition for tp in tps]
            consumer = routes.get(topic)
            if consumer is None:
                _resume(client, tps)  # librdkafka keeps a pause across revocations
            else:
                held = consumer.partitions
                revoking.append((held, numbers, held.revoking(numbers)))
        if not revoking:
            return
        # Jobs already running may finish within the grace period: their offsets are
        # committed below and the new owner does not repeat them.  Long ones see
        # revoked() and may stop early.
        deadline = time.monotonic() + max(held.revoke_grace for held, _, _ in revoking)
        for held, _, states in revoking:
            held.wait_settled(states, deadline)
        offsets = [tp for held, numbers, _ in revoking for tp in held.commit_positions(numbers, final=True)]
        try:
            self.commit(offsets)
        except KafkaException as e:
            self.logger.warning("Offset commit failed: %s", e.args[0])
        for held, numbers, _ in revoking:
            held.forget(numbers)

    def lost(self, client: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: another member may already own
        # these partitions, so committing now could skip its work.
        routes = self.routes()
        for topic, tps in by_topic(partitions).items():
            consumer = routes.get(topic)
            _resume(client, tps)
            if consumer is not None:
                consumer.partitions.lost([tp.partition for tp in tps])
        self.lost_at = time.monotonic()


def by_topic(items: Iterable[Any]) -> dict[str, list[Any]]:
    """Records or topic-partitions, grouped by topic in their order."""
    grouped: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        grouped[(item.topic() or "") if isinstance(item, KafkaRecord) else item.topic].append(item)
    return grouped


def _resume(client: ConfluentConsumer, partitions: list[TopicPartition]) -> None:
    try:
        client.resume(partitions)
    except (KafkaException, RuntimeError):
        pass  # not assigned any more: nothing to resume
