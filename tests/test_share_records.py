"""ShareRecords, the Kafka-free batch of a share consumer: examples and a model-based test
of every interleaving of fetches, starts, ends, give-backs, hand-overs, time and closing."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dramatiq_kafka.share_records import Acknowledge, Delivery, DeliveryState, ShareRecords, Verdict

LOCK = 30.0


def batch(*counts: int, at: float = 0.0) -> list[Delivery]:
    return [Delivery(0, offset, count, at) for offset, count in enumerate(counts)]


def test_records_start_up_to_the_limit_and_the_next_poll_waits_for_every_acknowledgement() -> None:
    records = ShareRecords(limit=2, lock_seconds=LOCK, delivery_limit=5)
    fetched = batch(1, 1, 1)
    records.fetched(fetched)
    assert [records.next(0.0), records.next(0.0), records.next(0.0)] == [
        (fetched[0], Verdict.RUN),
        (fetched[1], Verdict.RUN),
        None,
    ]
    assert not records.can_poll
    records.ended(fetched[0])
    records.acknowledge(fetched[0], Acknowledge.ACCEPT)
    assert records.next(0.0) == (fetched[2], Verdict.RUN)
    for delivery in fetched[1:]:
        records.acknowledge(delivery, Acknowledge.ACCEPT)
    assert not records.can_poll  # handed to Kafka first
    with pytest.raises(RuntimeError, match="before the last one was acknowledged"):
        records.fetched([])
    assert [a for _, a in records.take_outgoing()] == [Acknowledge.ACCEPT] * 3
    assert records.can_poll


def test_a_record_is_given_back_when_too_little_of_its_lock_is_left() -> None:
    records = ShareRecords(limit=1, lock_seconds=LOCK, delivery_limit=5)
    first, late, last_spare = batch(1, 3, 4)
    records.fetched([first, late, last_spare])
    assert records.next(0.0) == (first, Verdict.RUN)
    assert records.next(LOCK / 2) == (late, Verdict.RELEASE)  # delivered again as 4 of 5
    assert records.next(LOCK / 2) == (last_spare, Verdict.COPY)  # a RELEASE would leave no spare
    assert records.take_outgoing() == [(late, Acknowledge.RELEASE)]
    assert last_spare.state is DeliveryState.SETTLING


def test_a_record_on_its_last_delivery_is_dead_lettered_unrun() -> None:
    records = ShareRecords(limit=4, lock_seconds=LOCK, delivery_limit=5)
    (last,) = batch(5)
    records.fetched([last])
    assert records.next(0.0) == (last, Verdict.DEAD_LETTER)
    assert last.runs == 0


def test_a_job_that_outlives_its_lock_is_reported_once() -> None:
    records = ShareRecords(limit=1, lock_seconds=LOCK, delivery_limit=5)
    (job,) = batch(1)
    records.fetched([job])
    records.next(0.0)
    assert records.overdue(LOCK - 1) == []
    assert records.overdue(LOCK) == [job] and job.overdue
    assert records.overdue(LOCK + 5) == []


def test_closing_gives_back_what_did_not_start() -> None:
    records = ShareRecords(limit=1, lock_seconds=LOCK, delivery_limit=5)
    running, fresh, worn = batch(1, 1, 4)
    records.fetched([running, fresh, worn])
    records.next(0.0)
    records.close()
    assert records.next(0.0) == (fresh, Verdict.RELEASE)
    assert records.next(0.0) == (worn, Verdict.COPY)
    assert records.next(0.0) is None
    assert records.unsettled == 2  # the running job and the copy on its way


class ShareRecordsModel(RuleBasedStateMachine):
    """Whatever happens in whatever order, each record is acknowledged exactly once,
    never while Kafka could lose it, and the batch frees the next poll only then."""

    @initialize(
        limit=st.integers(1, 4), delivery_limit=st.integers(1, 6), lock=st.sampled_from([2.0, 10.0, 30.0])
    )
    def start(self, limit: int, delivery_limit: int, lock: float) -> None:
        self.records = ShareRecords(limit=limit, lock_seconds=lock, delivery_limit=delivery_limit)
        self.now = 0.0
        self.offset = 0
        self.fetched: list[Delivery] = []
        self.verdicts: dict[int, Verdict] = {}
        self.told: Counter[int] = Counter()  # acknowledgements handed to Kafka, by offset
        self.released: list[Delivery] = []
        self.let_go: set[int] = set()

    def _in(self, state: DeliveryState) -> list[Delivery]:
        return [d for d in self.records.batch if d.state is state]

    @precondition(lambda self: self.records.can_poll and not self.records.closing)
    @rule(counts=st.lists(st.integers(1, 7), max_size=5))
    def fetch(self, counts: list[int]) -> None:
        deliveries = []
        for count in counts:
            deliveries.append(Delivery(0, self.offset, count, self.now))
            self.offset += 1
        self.records.fetched(deliveries)
        self.fetched.extend(deliveries)

    @rule(seconds=st.sampled_from([0.1, 1.0, 5.0, 20.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def next_record(self) -> None:
        running_before = self.records.running
        found = self.records.next(self.now)
        if found is None:
            waiting = self.records.waiting
            assert not waiting or (running_before >= self.records.limit and not self.records.closing)
            return
        delivery, verdict = found
        assert delivery.offset not in self.verdicts
        self.verdicts[delivery.offset] = verdict
        limit = self.records.delivery_limit
        if verdict is Verdict.RUN:
            assert running_before < self.records.limit and not self.records.closing
            assert delivery.count < limit
            assert self.now - delivery.acquired < 0.5 * self.records.lock_seconds
        elif verdict is Verdict.DEAD_LETTER:
            assert delivery.count >= limit and not self.records.closing
        elif verdict is Verdict.RELEASE:
            assert delivery.count + 2 <= limit
        else:
            assert delivery.count + 2 > limit

    @precondition(lambda self: any(d.state is DeliveryState.RUNNING for d in self.records.batch))
    @rule(data=st.data(), settles_later=st.booleans())
    def job_ends(self, data: st.DataObject, settles_later: bool) -> None:
        delivery = data.draw(st.sampled_from(self._in(DeliveryState.RUNNING)))
        self.records.ended(delivery)
        assert delivery.state is DeliveryState.SETTLING
        if not settles_later:
            assert self.records.acknowledge(delivery, Acknowledge.ACCEPT)

    @precondition(lambda self: any(d.state is DeliveryState.SETTLING for d in self.records.batch))
    @rule(data=st.data())
    def kafka_has_what_came_first(self, data: st.DataObject) -> None:
        delivery = data.draw(st.sampled_from(self._in(DeliveryState.SETTLING)))
        assert self.records.acknowledge(delivery, Acknowledge.ACCEPT)

    @precondition(
        lambda self: any(
            d.state in (DeliveryState.RUNNING, DeliveryState.WAITING) for d in self.records.batch
        )
    )
    @rule(data=st.data())
    def given_back(self, data: st.DataObject) -> None:
        states = (DeliveryState.RUNNING, DeliveryState.WAITING)
        delivery = data.draw(st.sampled_from([d for d in self.records.batch if d.state in states]))
        verdict = self.records.give_back(delivery)
        assert verdict in (Verdict.RELEASE, Verdict.COPY)
        if verdict is Verdict.RELEASE:
            assert delivery.count + 2 <= self.records.delivery_limit

    @rule(data=st.data())
    def a_second_acknowledgement_changes_nothing(self, data: st.DataObject) -> None:
        done = self._in(DeliveryState.ACKNOWLEDGED)
        if done:
            delivery = data.draw(st.sampled_from(done))
            assert not self.records.acknowledge(delivery, Acknowledge.ACCEPT)
            assert self.records.give_back(delivery) is None

    @rule()
    def hand_over(self) -> None:
        for delivery, acknowledge in self.records.take_outgoing():
            self.told[delivery.offset] += 1
            if acknowledge is Acknowledge.RELEASE:
                self.released.append(delivery)

    @rule()
    def locks_run_out(self) -> None:
        settling = {d.offset for d in self._in(DeliveryState.SETTLING)}
        for delivery in self.records.let_go(self.now):
            assert delivery.offset in settling
            # Kafka took it back and delivers it again: it still has a delivery left.
            assert delivery.count < self.records.delivery_limit
            assert self.now - delivery.acquired >= self.records.lock_seconds
            self.let_go.add(delivery.offset)

    @rule()
    def close(self) -> None:
        self.records.close()

    @invariant()
    def counts_agree(self) -> None:
        records = self.records
        assert records.running == len(self._in(DeliveryState.RUNNING)) <= records.limit
        assert set(records.waiting) == set(self._in(DeliveryState.WAITING))
        assert max(self.told.values(), default=0) <= 1
        assert all(
            d.count + 2 <= records.delivery_limit for d in self.released if d.offset not in self.let_go
        )
        everything_told = all(self.told[d.offset] == 1 for d in records.batch)
        assert records.can_poll == everything_told

    def teardown(self) -> None:
        # Closing, every record ends acknowledged exactly once.
        records = self.records
        records.close()
        while records.next(self.now) is not None:
            pass
        for delivery in self._in(DeliveryState.RUNNING):
            records.ended(delivery)
        for delivery in self._in(DeliveryState.SETTLING):
            records.acknowledge(delivery, Acknowledge.ACCEPT)
        self.hand_over()
        assert all(self.told[d.offset] == 1 for d in self.fetched)
        assert records.can_poll and records.unsettled == 0


TestShareRecordsModel = ShareRecordsModel.TestCase
TestShareRecordsModel.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_a_record_settling_past_its_lock_is_let_go_unless_on_its_last_delivery() -> None:
    records = ShareRecords(limit=2, lock_seconds=LOCK, delivery_limit=5)
    stuck, last = batch(1, 5)
    records.fetched([stuck, last])
    records.next(0.0)
    records.next(0.0)  # the last delivery goes to the dead letters unrun: settling
    records.ended(stuck)
    assert records.let_go(LOCK - 1) == []
    assert records.let_go(LOCK) == [stuck] and stuck.acknowledged is Acknowledge.RELEASE
    assert last.state is DeliveryState.SETTLING  # kept: only its dead letter keeps the job
