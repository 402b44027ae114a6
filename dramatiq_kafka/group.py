"""A worker process's member of the consumer group: one Kafka consumer for all its queues.

Dramatiq asks a broker for one consumer per queue and one per delay queue.  Each
keeps the state of its own partitions (a
:class:`~dramatiq_kafka.topic_partitions.TopicPartitions`) and gets its records
from a :class:`GroupMember`, a librdkafka consumer.
With KIP-848's protocol (``group.protocol=consumer``) they all share one, subscribed
to all their topics: a process is then one member of its group and holds one set of
connections and librdkafka threads, whatever the number of queues.  With the classic
protocol each has its own (see ``GroupMembers.member_for`` for why).

The member's thread is the only one that calls the client.  It hands each fetched record
to the consumer of the record's topic and wakes it, serves the rebalance callbacks
(``rebalances.py``: the partitions of every topic revoked at once, within one grace
period) and commits the finished offsets of every consumer in one request.  Its
client's settings are ``consumer_settings.py``'s.  What a consumer asks of Kafka
from its own thread (pause, resume, a last commit) is queued for the member's thread:
with confluent-kafka 2.16, ``pause()`` from another thread while one is inside
``consume()`` did not return for minutes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from dramatiq.logging import get_logger

from .consumer_settings import new_client
from .errors import KafkaConnectionError
from .rebalances import Rebalances, by_topic

if TYPE_CHECKING:
    from .topic_partitions import TopicConsumer

#: The longest a single poll blocks, so that commits stay timely while idle.
POLL_SLICE = 0.1
#: The longest a poll blocks while a consumer has jobs in flight or waiting: nothing
#: can wake a thread inside librdkafka's poll, and the pauses and resumes the
#: consumers ask for wait for it (a process with one long job running: 2.0 % of a
#: core, 0.6 % idle).
BUSY_POLL_SLICE = 0.005
#: The most records fetched by one poll.
POLL_BATCH = 500
#: Seconds without a consumer coming or going before the subscription follows:
#: a worker's consumers start together, and each change of subscription is a rebalance.
SUBSCRIBE_SETTLE = 0.05

#: A member that lost its partitions and heard of no new assignment for
#: this many session timeouts is no member of its group any more: its client is rebuilt.
REJOIN_SESSIONS = 3
#: The session timeout librdkafka uses when the config sets none.
DEFAULT_SESSION_MS = 45_000
#: Seconds a given-up client may take to close before it is left behind.
CLOSE_TIMEOUT = 10.0


class GroupMember:
    """A librdkafka consumer: shared by the consumers of a process's queues with KIP-848's
    protocol, else the Kafka side of one of them, polled from its thread (:meth:`turn`).

    Parameters:
      config(dict): librdkafka consumer settings, ``group.id`` included.
      name(str): What the member is, for logs (``"group 'dramatiq'"``, a topic).
      hold(callable): While it returns true the member does not subscribe yet:
        the consumers of a worker that is starting are still coming.
    """

    def __init__(
        self, config: dict[str, Any], *, name: str, hold: Callable[[], bool] = lambda: False
    ) -> None:
        self.logger = get_logger(__name__, f"{type(self).__name__}({name})")
        self.config = config
        self.name = name
        self.hold = hold
        self.pid = os.getpid()
        #: Whether queues share it: with KIP-848's protocol only (see ``GroupMembers.member_for``).
        self.shared = config.get("group.protocol", "classic") == "consumer"
        self.rejoin_timeout = (
            REJOIN_SESSIONS * int(config.get("session.timeout.ms", DEFAULT_SESSION_MS)) / 1000
        )
        #: Wall-clock time of the last poll of Kafka (status records show it).
        self.last_poll: float | None = None
        # Guards the consumers, the subscription and the client's life.
        self._lock = threading.RLock()
        self._consumers: dict[str, TopicConsumer] = {}
        self._changed_at = 0.0
        self._subscribed: list[str] | None = None
        self._client: ConfluentConsumer | None = None
        self._opened = False
        self._thread: threading.Thread | None = None
        self.rebalances = Rebalances(
            routes=self._routes,
            subscribed=lambda: self._subscribed or (),
            commit=lambda offsets: self.commit(offsets, asynchronous=False),
            logger=self.logger,
        )
        # What other threads asked of the client, for the member's thread.
        self._requests: deque[Callable[[ConfluentConsumer], Any]] = deque()

    # -- consumers coming and going ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether its client was closed: its last consumer left, or it failed."""
        return self._opened and self._client is None

    def serves(self, topic: str) -> bool:
        """Whether a consumer of ``topic`` is attached."""
        with self._lock:
            return topic in self._consumers

    def attach(self, consumer: TopicConsumer) -> None:
        """Start fetching ``consumer``'s topic for it (the client and its thread start
        with the first consumer)."""
        with self._lock:
            assert consumer.topic not in self._consumers, f"{consumer.topic!r} is consumed already"
            self._consumers[consumer.topic] = consumer
            self._changed_at = time.monotonic()
            if self._client is None:
                self._client = self._new_client()
                self._opened = True
                self._subscribed = None
                self._start_thread()

    def detach(self, consumer: TopicConsumer) -> None:
        """Stop fetching for ``consumer`` after committing what it finished; the last
        consumer to leave closes the client, which leaves the group."""
        with self._lock:
            if self._consumers.get(consumer.topic) is not consumer:
                return
            del self._consumers[consumer.topic]
            self._changed_at = time.monotonic()
            client, thread = self._client, self._thread
            last = not self._consumers
            if last:
                self._client = self._thread = None
        if client is None:
            return
        offsets = consumer.partitions.commit_positions(final=True)
        if last:
            # The member's thread ends with its client: this thread has it to itself now.
            if thread is not None and thread is not threading.current_thread():
                thread.join()
            try:
                if offsets:
                    client.commit(offsets=offsets, asynchronous=False)
            finally:
                client.close()
        else:
            self._ask(lambda client: client.commit(offsets=offsets, asynchronous=False) if offsets else None)

    def _routes(self) -> dict[str, TopicConsumer]:
        with self._lock:
            return dict(self._consumers)

    def _new_client(self) -> ConfluentConsumer:
        return new_client(self.config, name=self.name, shared=self.shared, on_commit=self._on_commit)

    # -- what consumers ask of Kafka -----------------------------------------------------------------

    def pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching ``partitions`` (now on the member's thread, else at its next turn)."""
        self._soon(lambda client: client.pause(partitions))

    def resume(self, partitions: list[TopicPartition]) -> None:
        """Fetch ``partitions`` again (now on the member's thread, else at its next turn)."""
        self._soon(lambda client: client.resume(partitions))

    def seek(self, positions: list[TopicPartition]) -> None:
        """Fetch ``positions`` again from their offsets (the records from there on were
        handed out and not taken)."""

        def seek(client: ConfluentConsumer) -> None:
            for position in positions:
                client.seek(position)

        self._soon(seek)

    def _soon(self, request: Callable[[ConfluentConsumer], Any]) -> None:
        self._requests.append(request)
        if self._on_polling_thread() and self._client is not None:
            self._serve_requests(self._client)

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """The group's committed offsets of ``partitions`` (from the member's thread)."""
        result: list[TopicPartition] = self._ask(lambda client: client.committed(partitions, timeout=timeout))
        return result

    def _ask(self, request: Callable[[ConfluentConsumer], Any], timeout: float = 30.0) -> Any:
        """Run ``request`` with the client on the member's thread and return its result.

        Raises:
          KafkaException: When it raised that, or the client is gone.
        """
        client = self._client
        if client is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "the consumer is closed"))
        if self._on_polling_thread():
            return request(client)
        done = threading.Event()
        outcome: list[Any] = []

        def run(client: ConfluentConsumer) -> None:
            try:
                outcome.append((True, request(client)))
            except Exception as e:
                outcome.append((False, e))
            done.set()

        self._requests.append(run)
        if not done.wait(timeout):
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "the consumer did not answer"))
        succeeded, value = outcome[0]
        if not succeeded:
            raise value
        return value

    def _serve_requests(self, client: ConfluentConsumer) -> None:
        while self._requests:
            request = self._requests.popleft()
            try:
                request(client)
            except (KafkaException, RuntimeError) as e:
                # A partition revoked meanwhile: the next assignment starts afresh.
                self.logger.warning("A request to the Kafka consumer failed: %s", e)

    def commit(self, offsets: list[TopicPartition], *, asynchronous: bool = True) -> None:
        """Commit ``offsets`` (of any consumers' topics) and tell each consumer which of
        its own were committed.

        Raises:
          KafkaException: When a synchronous commit fails.
        """
        if not offsets:
            return
        if asynchronous:
            self._ask(lambda client: client.commit(offsets=offsets, asynchronous=True))
        else:
            self._on_commit(
                None, self._ask(lambda client: client.commit(offsets=offsets, asynchronous=False)) or []
            )

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self.logger.warning("Offset commit failed (will retry): %s", error)
        routes = self._routes()
        for topic, tps in by_topic(partitions).items():
            consumer = routes.get(topic)
            if consumer is not None:
                consumer.partitions.committed(error, tps)

    # -- the poll loop -------------------------------------------------------------------------------

    def _start_thread(self) -> None:
        """Start the polling thread of a shared member (under the lock); the consumer of an
        unshared one polls it from its own thread (:meth:`turn`), as Dramatiq's does."""
        if not self.shared:
            return
        self._thread = threading.Thread(
            target=self._run, args=(self._client,), name=f"kafka-{self.name}", daemon=True
        )
        self._thread.start()

    def _on_polling_thread(self) -> bool:
        return not self.shared or threading.current_thread() is self._thread

    def turn(self, wait: float) -> None:
        """Poll once, waiting at most ``wait`` seconds for records (an unshared member,
        from its consumer's thread)."""
        client = self._client
        if client is None:
            return
        try:
            self._poll(client, wait)
        except Exception as e:
            self._fail(client, e)

    def _run(self, client: ConfluentConsumer) -> None:
        while self._client is client:
            try:
                self._poll(client, POLL_SLICE)
            except Exception as e:
                self._fail(client, e)
                return

    def _poll(self, client: ConfluentConsumer, wait: float) -> None:
        now = time.monotonic()
        self._follow_consumers(client, now)
        self._check_membership(client, now)
        self._commit_when_due(now)
        self._serve_requests(client)
        self.last_poll = time.time()
        records = self._fetch(client, min(wait, BUSY_POLL_SLICE if self._busy() else POLL_SLICE))
        for record in records:
            if record.error() is not None:
                self._fetch_error(record)
        fetched = by_topic(record for record in records if record.error() is None)
        routes = self._routes()
        for topic, records in fetched.items():
            consumer = routes.get(topic)
            # A topic whose consumer left: its records are fetched again by the next owner.
            if consumer is not None:
                consumer.accept(records)

    def _busy(self) -> bool:
        return bool(self._requests) or any(consumer.partitions.busy() for consumer in self._routes().values())

    def _fetch(self, client: ConfluentConsumer, wait: float) -> list[KafkaRecord]:
        """Up to ``POLL_BATCH`` records, waiting at most ``wait`` seconds for the first.

        ``consume(n, t)`` returns only once it has ``n`` records or ``t`` ran
        out: at 500 jobs/s that held each job for 50 ms on average.
        """
        records: list[KafkaRecord] = client.consume(POLL_BATCH, 0)
        if records:
            return records
        records = client.consume(1, wait)
        if records:
            records += client.consume(POLL_BATCH - 1, 0)
        return records

    def _fetch_error(self, record: KafkaRecord) -> None:
        error = record.error()
        assert error is not None
        if error.fatal() or error.code() == KafkaError._AUTHENTICATION:
            raise KafkaConnectionError(f"Consumer of {self.name} failed: {error.str()}")
        consumer = self._routes().get(record.topic() or "")
        if consumer is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            consumer.partitions.fail(
                KafkaConnectionError(f"Consumer of {consumer.topic!r} failed: {error.str()}")
            )
            return
        self.logger.warning("Consumer of %r: %s", record.topic() or self.name, error.str())

    def _follow_consumers(self, client: ConfluentConsumer, now: float) -> None:
        """Subscribe to the consumers' topics once they stopped changing."""
        with self._lock:
            topics = sorted(self._consumers)
            if topics == self._subscribed or not topics:
                return
            if self.shared and now - self._changed_at < SUBSCRIBE_SETTLE:
                return
            if self._subscribed is None and self.shared and self.hold():
                return
            self._subscribed = topics
        client.subscribe(
            topics,
            on_assign=self.rebalances.assigned,
            on_revoke=self.rebalances.revoked,
            on_lost=self.rebalances.lost,
        )

    def _commit_when_due(self, now: float) -> None:
        offsets = [
            tp for consumer in self._routes().values() for tp in consumer.partitions.commit_when_due(now)
        ]
        try:
            self.commit(offsets)
        except KafkaException as e:
            self.logger.warning("Offset commit failed: %s", e.args[0])

    def _fail(self, client: ConfluentConsumer, error: Exception) -> None:
        """The client failed for good (refused credentials, a fatal error): every consumer
        raises it from its next ``__next__``, and Dramatiq starts them again."""
        if not isinstance(error, KafkaConnectionError):
            self.logger.error("The Kafka consumer of %s failed.", self.name, exc_info=True)
            error = KafkaConnectionError(f"The Kafka consumer of {self.name} failed: {error}")
        with self._lock:
            if self._client is not client:
                return
            consumers = list(self._consumers.values())
            self._consumers.clear()
            self._client = self._thread = None
        for consumer in consumers:
            consumer.partitions.fail(error)
        _close_in_background(client, self.logger)

    # -- membership ----------------------------------------------------------------------------------

    def _check_membership(self, client: ConfluentConsumer, now: float) -> None:
        """Replace a client that lost its partitions and never rejoined.

        After a node froze past the session timeout, a consumer sometimes
        (1 run in 4) logged its partitions lost and never got an assignment
        again: the client's group state never left the failed join: its
        coordinator connection kept the requests queued (JoinGroup, commits)
        and never sent them, and closing the client waited on them for good.
        A new client joins the group as a new member.
        """
        lost_at = self.rebalances.lost_at
        if lost_at is None or now - lost_at <= self.rejoin_timeout:
            return
        self.logger.warning(
            "The consumer of %s lost its partitions %.0f s ago and has not rejoined its group "
            "since: starting a new one.",
            self.name,
            now - lost_at,
        )
        self.rebalances.lost_at = None
        with self._lock:
            if self._client is not client:
                return
            self._client = self._new_client()
            self._subscribed = None
            self._start_thread()
        _close_in_background(client, self.logger)


def _close_in_background(client: ConfluentConsumer, logger: Any) -> None:
    """Close a client given up on without waiting on it: closing one that never
    rejoined waits on requests its coordinator connection never sends."""
    closing = threading.Thread(target=client.close, name="kafka-close", daemon=True)
    closing.start()
    closing.join(CLOSE_TIMEOUT)
    if closing.is_alive():
        logger.warning(
            "A Kafka consumer given up on did not close within %.0f s: left behind.", CLOSE_TIMEOUT
        )
