"""KafkaBroker: Dramatiq queues as Kafka topics."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import dramatiq
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import dq_name, q_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries

from .admin import TopicAdmin
from .client_scopes import ClientSettings
from .consumer import KafkaConsumer
from .dead_letters import DeadLetterWriter
from .delay_consumer import DelayConsumer
from .delays import TIERS, as_sent, delay_partition
from .deliveries import OutgoingRecord
from .errors import JobFailure, KafkaBrokerError
from .members import GroupMembers
from .middleware import BootCheck, DispatchOptions, PartitionRetries, RecordHeaders, Revocation
from .middleware.boot import check_not_gevent
from .producer import KafkaProducer
from .queue_config import (
    DeadLetter,
    QueueConfig,
    check_broker_settings,
    check_group_start,
)
from .retry_policy import RetryPolicy
from .services import BrokerServices
from .share_consumer import ShareQueueConsumer
from .share_group import ShareGroups, share_group_id
from .signals import CachedSignals
from .topics import topic_specs
from .topology import DEFAULT_DEAD_LETTER, Topology
from .wire import encode_message, message_headers

#: Where the broker looks for Kafka when ``bootstrap_servers`` is not given.
BOOTSTRAP_SERVERS_ENV = "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS"


class KafkaBroker(CachedSignals, dramatiq.Broker):
    """A broker that keeps each queue in a Kafka topic.

    Creating the broker (and declaring actors on it) touches no network:
    topics are created when first used, and clients are created lazily in
    each process.

    Parameters:
      bootstrap_servers(str): Kafka's address, ``host:port[,host:port]``.
        Defaults to ``$DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS`` or
        ``localhost:9092``.
      group_id(str): The consumer group of the workers.
      topic_prefix(str): Prepended to every topic name (``"prod."``
        makes queue ``default`` the topic ``prod.default``).
      config(dict): librdkafka settings given to every client
        (security, timeouts, ...); a consumer-only setting (``session.timeout.ms``)
        goes to the consumers only, a producer-only one (``linger.ms``) to the
        producer only.
      producer_config(dict): Extra librdkafka settings of the producer.
      consumer_config(dict): Extra librdkafka settings of the consumers.
      queues(dict[str, QueueConfig]): Per-queue topic layout and dead letters.
        A plain dict of a ``QueueConfig``'s settings does as well (Django
        settings), its ``dead_letter`` too.
      default_queue(QueueConfig): The settings of queues not in ``queues``
        (or a dict of them).
      dead_letter(DeadLetter): Where failed jobs go when a queue's config
        does not say (or a dict of its settings); ``None``: failed jobs are
        retried until they succeed.
      create_topics(bool): Whether missing topics are created.
      new_group_start(str): Where the group starts on a partition it never
        committed on (a new or renamed ``group_id``): ``"earliest"`` (the
        default: every record the topic still keeps runs, jobs finished
        under another group included) or ``"latest"`` (only jobs sent
        from then on).  ``QueueConfig(new_group_start=...)`` overrides it
        per queue, and so does ``auto.offset.reset`` in
        ``consumer_config``.
      dispatch_method(str): ``"async"`` (default) or ``"sync"``: whether
        ``send`` waits for Kafka's acknowledgement.
      dispatch_many_method(str): The same for :meth:`enqueue_many`.
      sync_timeout(float): Seconds a sync send waits.
      request_timeout(float): Seconds an admin request (creating topics,
        reading offsets) may take.
      fail_fast_default(bool): The default of ``join(fail_fast=...)``.
      status_interval(float): Seconds between two status records of a
        worker process (``status.py``, ``docs/wire-format.md``); ``None``
        publishes none.
      middleware(list[Middleware]): As for every Dramatiq broker.

    Raises:
      ConfigurationError: When a setting has the wrong type or value, or
        the process runs under gevent (unsupported).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str | None = None,
        group_id: str = "dramatiq",
        topic_prefix: str = "",
        config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        queues: Mapping[str, QueueConfig | Mapping[str, Any]] | None = None,
        default_queue: QueueConfig | Mapping[str, Any] | None = None,
        dead_letter: DeadLetter | Mapping[str, Any] | None = DEFAULT_DEAD_LETTER,
        create_topics: bool = True,
        new_group_start: str = "earliest",
        dispatch_method: str = "async",
        dispatch_many_method: str = "async",
        sync_timeout: float = 10.0,
        request_timeout: float = 10.0,
        fail_fast_default: bool = True,
        middleware: list[Middleware] | None = None,
        status_interval: float | None = 5.0,
    ) -> None:
        check_not_gevent()
        # Settings may come from Django's settings as plain values: check them here, not at
        # the first send.
        check_broker_settings(
            dict(
                bootstrap_servers=bootstrap_servers,
                group_id=group_id,
                topic_prefix=topic_prefix,
                config=config,
                producer_config=producer_config,
                consumer_config=consumer_config,
                queues=queues,
                create_topics=create_topics,
                request_timeout=request_timeout,
                fail_fast_default=fail_fast_default,
            )
        )
        super().__init__(middleware=middleware)
        # Retries happen in place, partition by partition: Dramatiq's own
        # Retries (re-enqueue with a delay) would run beside them.
        if middleware is not None and any(isinstance(m, Retries) for m in middleware):
            self.logger.warning("KafkaBroker retries in place: the Retries middleware given is not used.")
        self.middleware = [m for m in self.middleware if not isinstance(m, Retries)]
        self.bootstrap_servers = (
            bootstrap_servers or os.environ.get(BOOTSTRAP_SERVERS_ENV) or "localhost:9092"
        )
        self.group_id = group_id
        # A consumer-only (or producer-only) setting in `config` goes only where it applies:
        # elsewhere librdkafka would ignore it with a CONFWARN per client.
        self.client_settings = ClientSettings(
            bootstrap_servers=self.bootstrap_servers,
            group_id=group_id,
            config=config,
            producer_config=producer_config,
            consumer_config=consumer_config,
        )
        self.client_config = self.client_settings.client
        self.consumer_config = self.client_settings.consumer
        #: The queues' topics, settings and retry policies.
        self.topology = Topology.of(
            prefix=topic_prefix,
            queues=queues,
            default_queue=default_queue,
            dead_letter=dead_letter,
            actors=self.actors,
        )
        self.create_topics = create_topics
        check_group_start(new_group_start, "KafkaBroker")
        self.new_group_start = new_group_start
        self.request_timeout = request_timeout
        self.fail_fast_default = fail_fast_default
        self.queues: set[str] = set()
        self._topics_ensured: set[str] = set()
        self._partition_counts: dict[str, int] = {}
        self.failures_by_queue: dict[str, list[JobFailure]] = {}
        self.group_members = GroupMembers(group_id)

        self.producer = KafkaProducer(self.client_settings.producer)
        self.admin = TopicAdmin(self.client_config, group_id, timeout=request_timeout)
        self.dead_letters = DeadLetterWriter(self.producer, group_id)
        self.services = BrokerServices(self)
        self.share_groups = ShareGroups(lambda: self.admin.admin, timeout=request_timeout)

        self.dispatch = DispatchOptions(
            dispatch_method=dispatch_method,
            dispatch_many_method=dispatch_many_method,
            sync_timeout=sync_timeout,
        )
        self.add_middleware(self.dispatch)
        self.add_middleware(BootCheck())
        self.add_middleware(PartitionRetries())
        self.add_middleware(Revocation())
        if status_interval is not None:
            from .status import WorkerStatus

            self.add_middleware(WorkerStatus(interval=status_interval))

    # -- names ---------------------------------------------------------------------------------------

    @property
    def topic_prefix(self) -> str:
        return self.topology.prefix

    @property
    def queue_configs(self) -> dict[str, QueueConfig]:
        return self.topology.queues

    @property
    def default_queue(self) -> QueueConfig:
        return self.topology.default_queue

    @property
    def dead_letter(self) -> DeadLetter | None:
        return self.topology.dead_letter

    def queue_config(self, queue_name: str) -> QueueConfig:
        """The settings of a queue (its delay queue shares them)."""
        return self.topology.queue_config(queue_name)

    def topic_name(self, queue_name: str) -> str:
        """The topic that holds a queue (or a delay queue)."""
        return self.topology.topic_name(queue_name)

    def dead_letter_for(self, queue_name: str) -> DeadLetter | None:
        """A queue's dead-letter settings; ``None`` when it retries forever."""
        return self.topology.dead_letter_for(queue_name)

    def dead_letter_topic(self, queue_name: str) -> str:
        """The topic where a queue's failed jobs go (and, even for a queue
        that retries forever, records that are not jobs at all)."""
        return self.topology.dead_letter_topic(queue_name)

    def retry_policy(self, message: MessageProxy) -> RetryPolicy:
        """How a failed message is retried: the broker's and the queue's
        settings, overridden by the actor's options, then the message's."""
        return self.topology.retry_policy(message)

    # -- declaring -----------------------------------------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Record a queue and its delay queue.  No network: the topics are
        created when the queue is first used.

        Parameters:
          queue_name(str): The name of the new queue.
        """
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        self.emit_after("declare_queue", queue_name)

        delayed_name = dq_name(queue_name)
        self.delay_queues.add(delayed_name)
        self.emit_after("declare_delay_queue", delayed_name)

    def get_declared_queues(self) -> set[str]:
        return self.queues.copy()

    def ensure_topics(self, queue_name: str) -> None:
        """Create the topics of a queue (its own and its dead letters')
        when they are missing and ``create_topics`` is on."""
        if not self.create_topics:
            # Nothing to create, but a wrong address must fail this send, not a flush 30 s later.
            self.admin.check_reachable()
            return
        if queue_name in self._topics_ensured:
            return
        # A delay topic has a partition per delay tier at least (see delays.py).
        specs = topic_specs(
            self.queue_config(queue_name), self.topology.topics(queue_name), delay_partitions=TIERS
        )
        wanted = (self.topic_name(queue_name), self.dead_letter_topic(queue_name))
        self.admin.ensure({topic: specs[topic] for topic in wanted})
        # Checked on every enqueue: building the specs cost a tenth of a send.
        self._topics_ensured.add(queue_name)

    def _check_declared(self, queue_name: str) -> None:
        if queue_name not in self.queues and queue_name not in self.delay_queues:
            raise QueueNotFound(queue_name)

    # -- producing -----------------------------------------------------------------------------------

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Send a message to its queue's topic (or the delay topic).

        With ``dispatch_method="sync"`` this returns once Kafka has the
        record; otherwise at once, and delivery failures are logged,
        counted, and raised by :meth:`flush_producer`.

        Raises:
          QueueNotFound: When the queue was never declared.
          DeliveryError: When a sync send was not acknowledged.
        """
        return self._enqueue([message], delay=delay, many=False)[0]

    def enqueue_many(
        self, messages: Iterable[Message[Any]], *, delay: int | None = None
    ) -> list[Message[Any]]:
        """Send many messages at once, following ``dispatch_many_method``.

        Async (the default) returns once librdkafka has the records.  Sync
        waits for every delivery report, then raises one error naming each
        message that was not delivered.  When the messages disagree, the
        first one's ``dispatch_many_method`` and ``sync_timeout`` apply.

        Raises:
          QueueNotFound: When a queue was never declared.
          DeliveryError: Listing the messages not delivered, with reasons.
        """
        return self._enqueue(list(messages), delay=delay, many=True)

    def _enqueue(self, messages: list[Message[Any]], *, delay: int | None, many: bool) -> list[Message[Any]]:
        if not messages:
            return []
        prepared, records = [], []
        for message in messages:
            # Checked first, as Dramatiq's brokers do: an unknown queue is the error to report.
            self._check_declared(message.queue_name)
            message, message_delay = as_sent(message, delay)
            queue_name = message.queue_name
            self.emit_before("enqueue", message, message_delay)
            self.ensure_topics(queue_name)
            topic = self.topic_name(queue_name)
            partition = None
            if message_delay is not None:
                partition = self._delay_partition(topic, message_delay)
            headers = message_headers(message)
            for middleware in self.middleware_of_type(RecordHeaders):
                # Middleware may carry data beside the message.
                headers += middleware.record_headers(self, message)
            key = self.dispatch.key_for(self, message)
            record = OutgoingRecord(
                topic, encode_message(message), message.message_id, key, headers, partition
            )
            prepared.append((message, message_delay))
            records.append(record)
        timeout = self.dispatch.sync_timeout_for(self, prepared[0][0], many=many)
        self.producer.send_all(records, timeout=timeout)
        for message, message_delay in prepared:
            self.emit_after("enqueue", message, message_delay)
        return [message for message, _ in prepared]

    def _delay_partition(self, topic: str, delay: int) -> int | None:
        """The partition of the delay topic for ``delay`` (see delays.py)."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = len(self.admin.partitions(topic))
            if not count:  # just created, metadata not there yet: ask again next time
                return None
            self._partition_counts[topic] = count
        return delay_partition(delay, count)

    def flush_producer(self, timeout: float | None = None) -> None:
        """Wait until every record sent from this process is delivered.

        Raises:
          DeliveryError: Listing the async sends that failed since the
            last call.
        """
        self.producer.flush(timeout)

    # -- consuming -----------------------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 1000) -> Consumer:
        """Join the workers' group on a queue's topic (or the queue's share group).

        Raises:
          QueueNotFound: When the queue was never declared.
          KafkaConnectionError: When Kafka cannot be reached.
        """
        self._check_declared(queue_name)
        self.ensure_topics(queue_name)
        self.producer.start()  # as at process_boot, for a Worker started in-process
        share_group = self.share_group_of(queue_name)
        if share_group is not None:
            return self._share_consumer(queue_name, share_group, prefetch, timeout)
        options: dict[str, Any] = dict(
            queue_name=queue_name,
            topology=self.topology,
            member=self.group_members.member_for(
                queue_name,
                self.topic_name(queue_name),
                self.client_settings.consumer_starting(
                    self.queue_config(queue_name).new_group_start, self.new_group_start
                ),
            ),
            timeout=timeout,
            producer=self.producer,
            dead_letters=self.dead_letters,
            settle_timeout=self.dispatch.sync_timeout,
        )
        if queue_name in self.delay_queues:
            self.ensure_topics(q_name(queue_name))
            return DelayConsumer(**options)
        return KafkaConsumer(prefetch=prefetch, services=self.services, **options)

    def share_group_of(self, queue_name: str) -> str | None:
        """The share group that consumes a queue; ``None`` for the workers' consumer group
        (always so for a delay queue)."""
        if queue_name in self.delay_queues:
            return None
        share_group = self.queue_config(queue_name).share_group
        return None if share_group is False else share_group_id(share_group, self.group_id)

    def _share_consumer(self, queue_name: str, group_id: str, prefetch: int, timeout: int) -> Consumer:
        settings = self.share_groups.settings(group_id)
        return ShareQueueConsumer(
            queue_name=queue_name,
            topology=self.topology,
            config=self.client_settings.share_consumer(group_id),
            prefetch=prefetch,
            timeout=timeout,
            producer=self.producer,
            dead_letters=self.dead_letters,
            services=self.services,
            lock_seconds=settings.lock_ms / 1000,
            delivery_limit=settings.delivery_limit,
            settle_timeout=self.dispatch.sync_timeout,
        )

    # -- testing helpers -----------------------------------------------------------------------------

    def join(self, queue_name: str, *, timeout: int | None = None, fail_fast: bool | None = None) -> None:
        """Wait until the workers' group has committed every record of a
        queue and of its delay queue.  Meant for tests.

        Parameters:
          queue_name(str): The queue to wait on.
          timeout(int): The most milliseconds to wait.
          fail_fast(bool): Raise the error of the first job of this queue
            dead-lettered in this process.  Defaults to
            ``fail_fast_default``.

        Raises:
          QueueJoinTimeout: When the timeout elapses.
          QueueNotFound: When the queue was never declared.
          KafkaBrokerError: When the queue is consumed through a share group.
        """
        self._check_declared(queue_name)
        if self.share_group_of(queue_name) is not None:
            raise KafkaBrokerError(
                f"join({queue_name!r}): the queue is consumed through a share group, whose progress "
                "this client cannot read (confluent-kafka has no admin call for share groups' "
                "offsets). Wait for what the jobs do instead (a result, a counter)."
            )
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        should_fail_fast = self.fail_fast_default if fail_fast is None else fail_fast
        self.flush_producer()
        while True:
            drained = all(self.admin.drained(self.topic_name(q)) for q in (queue_name, dq_name(queue_name)))
            # Checked after the drain: a job may fail while the offsets are read.
            if should_fail_fast:
                for failure in self.failures_by_queue.get(q_name(queue_name), []):
                    raise failure.exception()
            if drained:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(0.1)

    def flush(self, queue_name: str) -> None:
        """Delete every record of a queue's topic (for tests)."""
        self._check_declared(queue_name)
        self.admin.truncate(self.topic_name(queue_name))
        self.failures_by_queue.pop(q_name(queue_name), None)

    def flush_all(self) -> None:
        """Delete every record of every declared queue (for tests)."""
        for queue_name in self.queues | self.delay_queues:
            self.flush(queue_name)

    def close(self) -> None:
        """Deliver what is pending (logging what could not be) and close the clients."""
        try:
            self.producer.close()
        finally:
            self.admin.close()
