"""Which librdkafka settings belong to consumers only, and which to producers only.

The broker's ``config`` is meant for every client (security, timeouts); a setting that
only one kind of client knows (``session.timeout.ms``, ``linger.ms``) would reach the
others too, where librdkafka ignores it with a CONFWARN line per client.  So such
settings are routed to the clients they apply to.  The names are librdkafka's
(CONFIGURATION.md, column C/P: "C" consumer, "P" producer); callbacks are left out,
since they are set by this package.  The admin client is a producer to librdkafka, and
gets neither: it needs no producer tuning.
"""

from __future__ import annotations

from typing import Any

from .consumer_settings import member_client_id

#: Settings librdkafka reads in consumers only (column C/P = C, global and topic level).
CONSUMER_ONLY = frozenset(
    {
        "auto.commit.enable",
        "auto.commit.interval.ms",
        "auto.offset.reset",
        "check.crcs",
        "consume.callback.max.messages",
        "coordinator.query.interval.ms",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "fetch.error.backoff.ms",
        "fetch.max.bytes",
        "fetch.message.max.bytes",
        "fetch.min.bytes",
        "fetch.queue.backoff.ms",
        "fetch.wait.max.ms",
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.protocol.type",
        "group.remote.assignor",
        "heartbeat.interval.ms",
        "isolation.level",
        "max.partition.fetch.bytes",
        "max.poll.interval.ms",
        "max.poll.records",
        "offset.store.method",
        "offset.store.path",
        "offset.store.sync.interval.ms",
        "partition.assignment.strategy",
        "queued.max.messages.kbytes",
        "queued.min.messages",
        "session.timeout.ms",
        "share.acknowledgement.mode",
    }
)

#: Settings librdkafka reads in producers only (column C/P = P, global and topic level).
PRODUCER_ONLY = frozenset(
    {
        "acks",
        "batch.num.messages",
        "batch.size",
        "compression.codec",
        "compression.level",
        "compression.type",
        "delivery.report.only.error",
        "delivery.timeout.ms",
        "enable.gapless.guarantee",
        "enable.idempotence",
        "linger.ms",
        "message.send.max.retries",
        "message.timeout.ms",
        "partitioner",
        "produce.offset.report",
        "queue.buffering.backpressure.threshold",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.messages",
        "queue.buffering.max.ms",
        "queuing.strategy",
        "request.required.acks",
        "request.timeout.ms",
        "retries",
        "sticky.partitioning.linger.ms",
        "transaction.timeout.ms",
        "transactional.id",
    }
)


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(shared, consumer_only, producer_only)``: ``config`` split by the clients it applies to."""
    shared: dict[str, Any] = {}
    consumer: dict[str, Any] = {}
    producer: dict[str, Any] = {}
    for name, value in config.items():
        if name in CONSUMER_ONLY:
            consumer[name] = value
        elif name in PRODUCER_ONLY:
            producer[name] = value
        else:
            shared[name] = value
    return shared, consumer, producer


class ClientSettings:
    """The librdkafka settings of each kind of client of a broker.

    Parameters:
      bootstrap_servers(str): Kafka's address.
      group_id(str): The workers' consumer group.
      config(dict): Settings of every client (those of one kind only go to it).
      producer_config(dict): Extra settings of the producer.
      consumer_config(dict): Extra settings of the consumers.

    Attributes:
      client(dict): Every client's (the admin client's: no producer tuning).
      consumer(dict): The consumers'.
      producer(dict): The producer's.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        shared, consumer_only, producer_only = split_config(config or {})
        self.client = {**shared, "bootstrap.servers": bootstrap_servers}
        self.consumer = {**self.client, **consumer_only, **(consumer_config or {}), "group.id": group_id}
        self.producer = {**self.client, **producer_only, **(producer_config or {})}
        self._offset_reset_given = "auto.offset.reset" in (consumer_config or {})

    def share_consumer(self, group_id: str) -> dict[str, Any]:
        """A share consumer's settings: every client's, and the share group.  The
        consumer group's settings do not apply (a share group's are its group config)."""
        return {"client.id": member_client_id(), **self.client, "group.id": group_id}

    def consumer_starting(self, queue_start: str | None, broker_start: str) -> dict[str, Any]:
        """The consumers' settings for a queue: where a new group starts is the
        queue's ``new_group_start``, else ``auto.offset.reset`` of
        ``consumer_config``, else the broker's ``new_group_start``."""
        config = dict(self.consumer)
        if queue_start is not None or not self._offset_reset_given:
            config["auto.offset.reset"] = queue_start or broker_start
        return config
