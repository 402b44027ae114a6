"""Topic management: creating missing topics, reading positions, truncating.

:class:`TopicAdmin` is every request about topics and a group's
positions (lag included) the broker, the command, the metrics and the
dashboard make.  The topics' names are ``topics.py``'s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # type: ignore[attr-defined]
from dramatiq.common import dq_name
from dramatiq.logging import get_logger

from .client_errors import ClientErrors
from .client_log import create_client
from .errors import KafkaBrokerError, KafkaConnectionError, not_reachable
from .topology import Topology

#: The longest single metadata request: between two, an authentication
#: failure reported meanwhile ends the wait.
METADATA_SLICE = 1.0
#: The same before the first success: a refused connection is known to
#: librdkafka within milliseconds, and ends the wait at the next look.
FIRST_CONTACT_SLICE = 0.05

#: Errors of a group coordinator that moves or loads (after a broker start or
#: restart): asking again shortly succeeds.
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


@dataclass(frozen=True)
class PartitionLag:
    """How far a group is behind on one partition.

    Attributes:
      partition(int): The partition id.
      committed(int): The group's committed offset, ``-1`` when it never
        committed one.
      low(int): The first offset still in the partition.
      end(int): The offset the next record will get.
    """

    partition: int
    committed: int
    low: int
    end: int

    @property
    def lag(self) -> int:
        """Records the group has yet to finish; with no commit, the group
        starts at the first record kept (``auto.offset.reset=earliest``)."""
        return max(0, self.end - max(self.committed, self.low))


class QueueLag(NamedTuple):
    """The lag of a queue's topic (or its delay queue's).

    Attributes:
      queue(str): The queue.
      name(str): The queue, or its delay queue (``queue.DQ``).
      topic(str): The topic of ``name``.
      partitions(list[PartitionLag] | None): Per partition; ``None`` when
        the topic does not exist.
    """

    queue: str
    name: str
    topic: str
    partitions: list[PartitionLag] | None


class MemberDescription(NamedTuple):
    """A member of a consumer group, as Kafka describes it.

    Attributes:
      client_id(str): The member's ``client.id`` (a worker's names its process,
        ``dramatiq-kafka@HOST:PID``).
      host(str): The address Kafka sees it from.
      partitions(list[str]): Its assignment, ``topic/partition``.
    """

    client_id: str
    host: str
    partitions: list[str]


class TopicAdmin:
    """Creates topics on first use and answers questions about positions.

    Nothing here touches the network until a method is called.

    Parameters:
      config(dict): librdkafka settings shared with the other clients.
      group_id(str): The workers' consumer group, for committed offsets.
      timeout(float): Seconds each request may take.
    """

    def __init__(self, config: dict[str, Any], group_id: str, *, timeout: float = 10.0) -> None:
        self.logger = get_logger(__name__, type(self))
        self.config = config
        self.group_id = group_id
        self.timeout = timeout
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._inspector: Consumer | None = None
        self._ensured: set[str] = set()
        self._reached_pid: int | None = None
        #: Existing topics with fewer partitions than asked: name -> (have, wanted).
        self.short_topics: dict[str, tuple[int, int]] = {}
        self.errors = ClientErrors(config, "admin client")

    @property
    def bootstrap_servers(self) -> str:
        return str(self.config.get("bootstrap.servers"))

    @property
    def admin(self) -> AdminClient:
        with self._lock:
            if self._admin is None:
                config: dict[str, Any] = {**self.config, "error_cb": self.errors}
                self._admin = create_client(AdminClient, config, "admin client")
            return self._admin

    @property
    def inspector(self) -> Consumer:
        """A consumer of the workers' group that never joins it: it only
        reads committed offsets and watermarks."""
        with self._lock:
            if self._inspector is None:
                self._inspector = create_client(
                    Consumer,
                    {
                        **self.config,
                        "group.id": self.group_id,
                        "enable.auto.commit": False,
                        "error_cb": self.errors,
                    },
                    "offsets reader",
                )
            return self._inspector

    def _unreachable(self, error: object) -> KafkaConnectionError:
        return not_reachable(self.bootstrap_servers, error)

    def topic_names(self) -> set[str]:
        """The topics of the cluster.

        Raises:
          AuthenticationError: When Kafka refuses the credentials.
          KafkaConnectionError: When the cluster does not answer in time.
        """
        return set(self._metadata().topics)

    def _metadata(self, topic: str | None = None) -> Any:
        """The cluster's metadata (of one topic, or all).

        Raises:
          AuthenticationError: As soon as librdkafka reports that Kafka
            refused the credentials.
          KafkaConnectionError: When the cluster does not answer in time.
        """
        admin = self.admin
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            slice_ = METADATA_SLICE if self.errors.reached else FIRST_CONTACT_SLICE
            try:
                metadata = admin.list_topics(topic=topic, timeout=max(0.01, min(slice_, remaining)))
            except KafkaException as e:
                admin.poll(0)  # serves error_cb (and the log)
                self.errors.check()
                self.errors.check_first_contact()
                if time.monotonic() >= deadline:
                    raise self._unreachable(e.args[0]) from None
                continue
            self.errors.succeeded()
            return metadata

    def check_reachable(self) -> None:
        """Make sure Kafka answers, once per process (a metadata request).

        Raises:
          KafkaConnectionError: At once when Kafka refuses connections (a
            wrong address), after ``timeout`` when it does not answer.
          AuthenticationError: When Kafka refuses the credentials.
        """
        if self._reached_pid != os.getpid():
            self._metadata()
            self._reached_pid = os.getpid()

    def ensure(self, topics: dict[str, NewTopic]) -> None:
        """Create the topics that do not exist yet; use existing ones as they are.

        Parameters:
          topics(dict[str, NewTopic]): The wanted topics by name.
        """
        wanted = {name: spec for name, spec in topics.items() if name not in self._ensured}
        if not wanted:
            return
        existing = self._metadata().topics
        missing = [spec for name, spec in wanted.items() if name not in existing]
        for name, spec in wanted.items():
            if name in existing and 0 < len(existing[name].partitions) < spec.num_partitions:
                have = len(existing[name].partitions)
                self.short_topics[name] = (have, spec.num_partitions)
                # Silent, this is a second worker that never gets work.
                self.logger.warning(
                    "Topic %r has %d partition(s), fewer than the %d its QueueConfig asks: at most %d "
                    "worker process(es) of the group get its jobs. `dramatiq-kafka topics ensure "
                    "--add-partitions MODULE` adds them (keyed jobs then move to other partitions).",
                    name,
                    have,
                    spec.num_partitions,
                    have,
                )
        if missing:
            futures = self.admin.create_topics(missing, request_timeout=self.timeout)
            counts = {spec.topic: spec.num_partitions for spec in missing}
            for name, future in futures.items():
                try:
                    future.result()
                    if counts[name] > 0:
                        self.logger.info("Created topic %r with %d partition(s).", name, counts[name])
                    else:
                        self.logger.info(
                            "Created topic %r with the cluster's num.partitions partition(s): "
                            "QueueConfig(partitions=...) sizes it (the most worker processes that "
                            "share its jobs).",
                            name,
                        )
                except KafkaException as e:
                    error: KafkaError = e.args[0]
                    if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise KafkaBrokerError(f"Could not create topic {name!r}: {error.str()}") from None
        self._ensured.update(wanted)

    def add_partitions(self, topic: str, total: int) -> None:
        """Grow a topic to ``total`` partitions.  Records already in it stay
        where they are; new records of a key may go to another partition
        than its earlier ones, so a key's order holds only among records
        sent after the change.

        Raises:
          KafkaBrokerError: When Kafka refuses (fewer than now, not allowed).
        """
        futures = self.admin.create_partitions([NewPartitions(topic, total)], request_timeout=self.timeout)
        for future in futures.values():
            try:
                future.result()
            except KafkaException as e:
                raise KafkaBrokerError(f"Could not add partitions to {topic!r}: {e.args[0].str()}") from None
        self.short_topics.pop(topic, None)
        self.logger.info("Topic %r now has %d partitions.", topic, total)

    def partitions(self, topic: str) -> list[int]:
        """The partition ids of a topic, or ``[]`` when it does not exist."""
        found = self._metadata(topic).topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """The low and high watermark of every partition of a topic."""
        inspector = self.inspector
        ends = {}
        for partition in self.partitions(topic):
            try:
                ends[partition] = inspector.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout, cached=False
                )
            except KafkaException as e:
                raise self._unreachable(e.args[0]) from None
        return ends

    def drained(self, topic: str) -> bool:
        """Whether the group committed every record of ``topic``."""
        watermarks = self.watermarks(topic)
        committed = self.committed_offsets(topic, list(watermarks))
        # Records below the low watermark were deleted: nothing to wait for.
        return all(max(committed[p], low) >= high for p, (low, high) in watermarks.items())

    def committed_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """The group's committed position per partition (-1 when none)."""
        if not partitions:
            return {}
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                committed = self.inspector.committed(
                    [TopicPartition(topic, partition) for partition in partitions], timeout=self.timeout
                )
                break
            except KafkaException as e:
                # The group's coordinator moves (or loads) after a broker restart.
                error: KafkaError = e.args[0]
                retry = error.retriable() or error.code() in COORDINATOR_MOVING
                if not retry or time.monotonic() >= deadline:
                    raise self._unreachable(e.args[0]) from None
                time.sleep(0.1)
        return {tp.partition: tp.offset if tp.offset >= 0 else -1 for tp in committed}

    def lag(self, topic: str) -> list[PartitionLag]:
        """The group's position against the end of every partition of a
        topic (``[]`` when the topic does not exist)."""
        watermarks = self.watermarks(topic)
        committed = self.committed_offsets(topic, list(watermarks))
        return [
            PartitionLag(partition, committed.get(partition, -1), low, end)
            for partition, (low, end) in sorted(watermarks.items())
        ]

    def queue_lags(
        self, queues: Iterable[str], topology: Topology, existing: set[str] | None = None
    ) -> Iterator[QueueLag]:
        """:meth:`lag` of the topic of every queue and its delay queue, in
        order; ``partitions`` is ``None`` for a topic that does not exist.

        Parameters:
          queues: The queues' names.
          topology(Topology): What names their topics.
          existing(set): The cluster's topics, when the caller has them.
        """
        existing = self.topic_names() if existing is None else existing
        for queue in queues:
            for name in (queue, dq_name(queue)):
                topic = topology.topic_name(name)
                yield QueueLag(queue, name, topic, self.lag(topic) if topic in existing else None)

    def lags(self, topics: list[str]) -> dict[str, list[PartitionLag]]:
        """:meth:`lag` of many topics in four requests (metadata, earliest and
        latest offsets, committed offsets) instead of two per partition;
        a topic that does not exist gets ``[]``."""
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        metadata = self._metadata().topics
        tps = [
            TopicPartition(topic, partition)
            for topic in topics
            if topic in metadata and metadata[topic].error is None
            for partition in sorted(metadata[topic].partitions)
        ]
        found: dict[str, list[PartitionLag]] = {topic: [] for topic in topics}
        if not tps:
            return found
        try:
            ends = {
                (tp.topic, tp.partition): future.result().offset
                for tp, future in self.admin.list_offsets(
                    {tp: OffsetSpec.latest() for tp in tps}, request_timeout=self.timeout
                ).items()
            }
            lows = {
                (tp.topic, tp.partition): future.result().offset
                for tp, future in self.admin.list_offsets(
                    {tp: OffsetSpec.earliest() for tp in tps}, request_timeout=self.timeout
                ).items()
            }
            committed = {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else -1
                for tp in self.inspector.committed(tps, timeout=self.timeout)
            }
        except KafkaException as e:
            raise self._unreachable(e.args[0]) from None
        for tp in tps:
            where = (tp.topic, tp.partition)
            found[tp.topic].append(
                PartitionLag(tp.partition, committed.get(where, -1), lows[where], ends[where])
            )
        return found

    def group_members(self) -> list[MemberDescription]:
        """The members of the workers' group now (none when the group is empty or unknown)."""
        try:
            description = self.admin.describe_consumer_groups([self.group_id], request_timeout=self.timeout)[
                self.group_id
            ].result()
        except KafkaException as e:
            # A group that never had a member is described as empty (state DEAD); an
            # error is a coordinator not ready yet (NOT_COORDINATOR on a new node) or worse.
            raise self._unreachable(e.args[0]) from None
        return [
            MemberDescription(
                member.client_id,
                member.host,
                sorted(f"{tp.topic}/{tp.partition}" for tp in (member.assignment.topic_partitions or [])),
            )
            for member in description.members
        ]

    def truncate(self, topic: str) -> None:
        """Delete every record currently in a topic (for tests and ``flush``)."""
        partitions = self.partitions(topic)
        if not partitions:
            return
        futures = self.admin.delete_records(
            [TopicPartition(topic, partition, OFFSET_END) for partition in partitions],
            request_timeout=self.timeout,
        )
        for future in futures.values():
            future.result()

    def close(self) -> None:
        with self._lock:
            if self._inspector is not None:
                self._inspector.close()
            self._inspector = None
            self._admin = None
