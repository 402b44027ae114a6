"""The records a share consumer holds and what may become of each; no Kafka here.

A share group (KIP-932) lends a consumer records for a while (the *record lock*) and
counts how often each was delivered.  Each record is acknowledged on its own: ACCEPT
(done, never delivered again) or RELEASE (delivered again at once, to any consumer).  A
record whose lock runs out is delivered again too, and one delivered
``share.delivery.count.limit`` times without an ACCEPT is archived by Kafka: for a job
queue, lost.  confluent-kafka's ``ShareConsumer`` also refuses to poll while any record
of the previous batch is not acknowledged.

:class:`ShareRecords` keeps one consumer's batch and decides, for each record:

- whether it may start (the in-flight limit; not when too little of its lock is left);
- when it is given back instead (RELEASE while the delivery count leaves room for one
  more delivery and a crash, else a copy sent to the queue, then ACCEPT);
- that a record on its last delivery goes to the dead letters unrun: its earlier
  deliveries ended in a crash or a lock that ran out, and one more would lose it;
- which running records have outlived their lock (logged once), and which records still
  settling when their lock ran out are let go (Kafka took them back);
- when the batch is all acknowledged, so the next poll may come.

Each record is acknowledged exactly once; the consumer (``share_consumer.py``) hands the
acknowledgements to Kafka from its own thread.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["Acknowledge", "Delivery", "DeliveryState", "ShareRecords", "Verdict"]

#: A record is started only while at least this share of its lock is left.
START_WITHIN = 0.5


class Acknowledge(enum.Enum):
    """What Kafka is told of a record."""

    ACCEPT = "accept"
    RELEASE = "release"


class DeliveryState(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    #: Ended; its ACCEPT waits for Kafka to have what must come first (a retry's copy,
    #: a dead letter, the records its job enqueued).
    SETTLING = "settling"
    ACKNOWLEDGED = "acknowledged"


class Verdict(enum.Enum):
    """What becomes of a waiting record (see :meth:`ShareRecords.next`)."""

    RUN = "run"
    RELEASE = "release"
    #: Sent to the queue again as a new record, then accepted: a RELEASE would
    #: leave it no delivery to spare.
    COPY = "copy"
    DEAD_LETTER = "dead-letter"


class Delivery:
    """One delivery of a record to this consumer.

    Attributes:
      partition(int), offset(int): Where the record is.
      count(int): Kafka's delivery count, this delivery included.
      acquired(float): When it was fetched (monotonic seconds): its lock runs from then.
      record: What the consumer keeps of it (the Kafka record).
      state(DeliveryState): Where it stands.
      acknowledged(Acknowledge): What Kafka was told, once it was.
      failures(int): Failed runs of the job so far (its earlier copies' included).
      runs(int): How many times it started here (0 or 1).
      overdue(bool): Whether it ran past its lock (logged once).
    """

    __slots__ = (
        "acknowledged",
        "acquired",
        "count",
        "failures",
        "offset",
        "overdue",
        "partition",
        "record",
        "runs",
        "state",
    )

    def __init__(self, partition: int, offset: int, count: int, acquired: float, record: Any = None) -> None:
        self.partition = partition
        self.offset = offset
        self.count = max(count, 1)
        self.acquired = acquired
        self.record = record
        self.state = DeliveryState.WAITING
        self.acknowledged: Acknowledge | None = None
        self.failures = 0
        self.runs = 0
        self.overdue = False

    def __repr__(self) -> str:
        return f"Delivery({self.partition}@{self.offset} #{self.count}, {self.state.value})"


class ShareRecords:
    """One share consumer's batch of records.

    Parameters:
      limit(int): The most records running at once (the worker's prefetch).
      lock_seconds(float): The share group's record lock
        (``share.record.lock.duration.ms``).
      delivery_limit(int): The share group's ``share.delivery.count.limit``.
    """

    def __init__(self, *, limit: int, lock_seconds: float, delivery_limit: int) -> None:
        self.limit = max(limit, 1)
        self.lock_seconds = lock_seconds
        self.delivery_limit = max(delivery_limit, 1)
        self.batch: list[Delivery] = []
        self.waiting: deque[Delivery] = deque()
        self.running = 0
        self.closing = False
        #: Acknowledgements decided and not yet handed to Kafka.
        self.outgoing: list[tuple[Delivery, Acknowledge]] = []

    @property
    def can_poll(self) -> bool:
        """Whether every record of the batch is acknowledged and handed over."""
        return not self.outgoing and all(d.state is DeliveryState.ACKNOWLEDGED for d in self.batch)

    @property
    def unsettled(self) -> int:
        """Records running or settling: what a closing consumer waits for."""
        return sum(d.state in (DeliveryState.RUNNING, DeliveryState.SETTLING) for d in self.batch)

    def fetched(self, deliveries: Iterable[Delivery]) -> None:
        """A new batch, fetched once the last one was all acknowledged."""
        if not self.can_poll:
            raise RuntimeError("A batch was fetched before the last one was acknowledged.")
        self.batch = list(deliveries)
        self.waiting = deque(self.batch)

    def _gives_back(self, delivery: Delivery) -> Verdict:
        # After a RELEASE Kafka delivers it again as count + 1; keep one delivery
        # to spare beyond that for a crash of whoever runs it.
        return Verdict.RELEASE if delivery.count + 2 <= self.delivery_limit else Verdict.COPY

    def next(self, now: float) -> tuple[Delivery, Verdict] | None:
        """The next waiting record and what becomes of it (it leaves the waiting
        ones); ``None`` when none may go now.  A RELEASE is acknowledged here; the
        other verdicts are the consumer's to carry out."""
        while self.waiting:
            delivery = self.waiting[0]
            if self.closing:
                verdict = self._gives_back(delivery)
            elif delivery.count >= self.delivery_limit:
                verdict = Verdict.DEAD_LETTER
            elif self.too_late(delivery, now):
                verdict = self._gives_back(delivery)
            elif self.running < self.limit:
                verdict = Verdict.RUN
            else:
                return None
            if verdict is Verdict.RELEASE:
                self.acknowledge(delivery, Acknowledge.RELEASE)  # out of the waiting ones too
                return delivery, verdict
            self.waiting.popleft()
            if verdict is Verdict.RUN:
                delivery.state = DeliveryState.RUNNING
                delivery.runs += 1
                self.running += 1
            else:
                delivery.state = DeliveryState.SETTLING
            return delivery, verdict
        return None

    def ended(self, delivery: Delivery) -> None:
        """A run ended; what follows (an ACCEPT, a retry's copy, a dead letter) settles it."""
        if delivery.state is DeliveryState.RUNNING and self.owns(delivery):
            self.running -= 1
            delivery.state = DeliveryState.SETTLING

    def give_back(self, delivery: Delivery) -> Verdict | None:
        """A record that will not run to its end here (handed to the worker and never
        started, or its end could not be settled): RELEASE it (acknowledged here) or,
        when its delivery count leaves no room, COPY it (the consumer's to carry out).
        ``None`` when it was acknowledged already."""
        if delivery.state is DeliveryState.ACKNOWLEDGED or not self.owns(delivery):
            return None
        verdict = self._gives_back(delivery)
        if verdict is Verdict.RELEASE:
            self.acknowledge(delivery, Acknowledge.RELEASE)
        else:
            if delivery.state is DeliveryState.RUNNING:
                self.running -= 1
            elif delivery.state is DeliveryState.WAITING:
                self.waiting.remove(delivery)
            delivery.state = DeliveryState.SETTLING
        return verdict

    def acknowledge(self, delivery: Delivery, acknowledge: Acknowledge) -> bool:
        """Decide a record's acknowledgement; ``False`` (and nothing changes) when it
        was acknowledged already or is not of this batch."""
        if delivery.state is DeliveryState.ACKNOWLEDGED or not self.owns(delivery):
            return False
        if delivery.state is DeliveryState.RUNNING:
            self.running -= 1
        elif delivery.state is DeliveryState.WAITING:
            self.waiting.remove(delivery)
        delivery.state = DeliveryState.ACKNOWLEDGED
        delivery.acknowledged = acknowledge
        self.outgoing.append((delivery, acknowledge))
        return True

    def take_outgoing(self) -> list[tuple[Delivery, Acknowledge]]:
        """The acknowledgements to hand to Kafka now."""
        outgoing, self.outgoing = self.outgoing, []
        return outgoing

    def owns(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` is of this batch (not of a consumer made before this one)."""
        return any(d is delivery for d in self.batch)

    def too_late(self, delivery: Delivery, now: float) -> bool:
        """Whether too little of the record's lock is left to start its job now."""
        return now - delivery.acquired >= START_WITHIN * self.lock_seconds

    def let_go(self, now: float) -> list[Delivery]:
        """Records still settling once their lock ran out (a dead letter or a copy Kafka
        keeps refusing, sends that never report): Kafka took them back already and
        delivers them again, so they are acknowledged as released here and the next
        poll may come.  Not so a record on its last delivery: Kafka dropped it, and only
        the write still being tried keeps it (the consumer waits for it)."""
        gone = [
            d
            for d in self.batch
            if d.state is DeliveryState.SETTLING
            and d.count < self.delivery_limit
            and now - d.acquired >= self.lock_seconds
        ]
        for delivery in gone:
            self.acknowledge(delivery, Acknowledge.RELEASE)
        return gone

    def overdue(self, now: float) -> list[Delivery]:
        """Running records that outlived their lock since the last call: Kafka
        delivers them again elsewhere."""
        found = []
        for delivery in self.batch:
            if (
                delivery.state is DeliveryState.RUNNING
                and not delivery.overdue
                and now - delivery.acquired >= self.lock_seconds
            ):
                delivery.overdue = True
                found.append(delivery)
        return found

    def close(self) -> None:
        """Start nothing more: each waiting record is given back by :meth:`next`."""
        self.closing = True
