"""Delayed messages through the delay topic, on a real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq import Worker
from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka import ConfigurationError, KafkaBroker
from dramatiq_kafka.delays import TIER_BOUNDS, TIERS, delay_partition, delay_tier, tier_partitions
from tests.helpers import create_topic, read_topic, record_count, wait_for

#: How late a delayed job may start under normal load (docs/delays.md).
LATENESS_BOUND = 1.0


@given(st.integers(min_value=0, max_value=10**10), st.integers(min_value=0, max_value=10**10))
def test_longer_delays_never_get_an_earlier_tier(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert delay_tier(low) <= delay_tier(high) < TIERS


@given(st.integers(min_value=1, max_value=64))
def test_tiers_cover_every_partition_in_order(partitions: int) -> None:
    spans = [tier_partitions(tier, partitions) for tier in range(TIERS)]
    assert all(len(span) >= 1 and 0 <= span[0] and span[-1] < partitions for span in spans)
    assert sorted({p for span in spans for p in span}) == list(range(partitions))
    assert [span[0] for span in spans] == sorted(span[0] for span in spans)


def test_a_delay_goes_to_a_partition_of_its_tier() -> None:
    assert delay_tier(500) == delay_tier(1_000) == 0
    assert delay_tier(3_000) == 1
    assert delay_tier(TIER_BOUNDS[-1] + 1) == TIERS - 1
    assert {delay_partition(3_000, 18) for _ in range(10)} == set(tier_partitions(1, 18))


def warm_up(stamp: dramatiq.Actor[..., None], starts: dict[str, float]) -> None:
    """Wait until the worker's consumers are assigned and fetching: a
    first delayed job runs."""
    name = f"warm-up-{len(starts)}"
    stamp.send_with_options(args=(name,), delay=1)
    wait_for(lambda: name in starts, timeout=30)


@contextmanager
def running(
    broker: KafkaBroker, stamp: dramatiq.Actor[..., None], starts: dict[str, float]
) -> Iterator[None]:
    """A worker, assigned and fetching."""
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        warm_up(stamp, starts)
        yield
    finally:
        worker.stop()


def started_at(broker: KafkaBroker, queue: str) -> tuple[dramatiq.Actor[..., None], dict[str, float]]:
    starts: dict[str, float] = {}

    @dramatiq.actor(queue_name=queue, actor_name="stamp")
    def stamp(name: str) -> None:
        starts.setdefault(name, time.time())

    return stamp, starts


@pytest.mark.parametrize("delay_partitions", [1, None], ids=["one-partition", "tiers"])
def test_delayed_jobs_start_when_due_whatever_their_order(
    make_broker: Callable[..., KafkaBroker], unique_name: str, delay_partitions: int | None
) -> None:
    broker = make_broker(partitions=1)
    if delay_partitions is not None:  # an existing delay topic is used as it is
        create_topic(broker.bootstrap_servers, f"{unique_name}.DQ", delay_partitions)
    stamp, starts = started_at(broker, unique_name)
    with running(broker, stamp, starts):
        due = {}
        for name, delay in (("1s", 1000), ("3s", 3000), ("0.5s", 500)):
            due[name] = time.time() + delay / 1000
            stamp.send_with_options(args=(name,), delay=delay)
        broker.join(unique_name, timeout=20_000)
    for name in due:
        assert due[name] - 0.01 <= starts[name] <= due[name] + LATENESS_BOUND, (
            name,
            starts[name] - due[name],
        )
    assert sorted(due, key=starts.__getitem__) == ["0.5s", "1s", "3s"]


def test_an_eta_option_delays_the_job_and_keeps_context_headers(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1)
    stamp, starts = started_at(broker, unique_name)
    with running(broker, stamp, starts):
        due = time.time() + 1.0
        stamp.send_with_options(args=("eta",), eta=int(due * 1000))
        stamp.send_with_options(args=("datetime",), eta=datetime.fromtimestamp(due, UTC))
        stamp.send_with_options(args=("past",), eta=int(time.time() * 1000) - 5000)
        broker.flush_producer()
        broker.join(unique_name, timeout=20_000)
    assert starts["past"] < due
    for name in ("eta", "datetime"):
        assert due - 0.01 <= starts[name] <= due + LATENESS_BOUND
    # The delayed ones went through the delay topic; all came out as jobs of the queue.
    assert record_count(broker.bootstrap_servers, f"{unique_name}.DQ") == 3
    moved = read_topic(broker.bootstrap_servers, unique_name, count=4)
    assert all(r.headers["dramatiq_actor"] == b"stamp" for r in moved)


def test_a_bad_eta_fails_at_send(make_broker: Callable[..., KafkaBroker], unique_name: str) -> None:
    broker = make_broker()
    stamp, _ = started_at(broker, unique_name)
    with pytest.raises(ConfigurationError, match="eta='tomorrow' must be milliseconds since the epoch"):
        stamp.send_with_options(args=("x",), eta="tomorrow")
    with pytest.raises(ConfigurationError, match="has no time zone; give an aware datetime"):
        stamp.send_with_options(args=("x",), eta=datetime(2030, 1, 1))


def test_a_short_delay_is_not_held_up_by_many_long_ones(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    # 50 jobs due in an hour fill a buffer of 10: with one delay partition
    # the short job waits behind them (the documented bound), with tiers it
    # lives in another partition and starts on time.
    broker = make_broker(partitions=1, delay_buffer=10)
    stamp, starts = started_at(broker, unique_name)
    with running(broker, stamp, starts):
        for i in range(50):
            stamp.send_with_options(args=(f"later-{i}",), delay=3_600_000)
        due = time.time() + 0.5
        stamp.send_with_options(args=("soon",), delay=500)
        wait_for(lambda: "soon" in starts, timeout=10)
    assert due - 0.01 <= starts["soon"] <= due + LATENESS_BOUND
    assert not any(name.startswith("later") for name in starts)


def test_a_full_delay_buffer_pauses_its_partition(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1, delay_buffer=10)
    create_topic(broker.bootstrap_servers, f"{unique_name}.DQ", 1)
    stamp, starts = started_at(broker, unique_name)
    with running(broker, stamp, starts):
        for i in range(30):
            stamp.send_with_options(args=(f"later-{i}",), delay=3_600_000)
        stamp.send_with_options(args=("soon",), delay=200)
        broker.flush_producer()
        time.sleep(3)
    # Behind 30 jobs due later in its only partition, with room for 10 of
    # them in memory: it waits, and nothing is committed past it.
    assert "soon" not in starts
    assert record_count(broker.bootstrap_servers, unique_name) == 1  # the warm-up job


def test_jobs_moved_behind_a_long_delay_are_not_moved_again_by_the_next_worker(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1)
    create_topic(broker.bootstrap_servers, f"{unique_name}.DQ", 1)
    stamp, starts = started_at(broker, unique_name)
    runs: list[str] = []

    @dramatiq.actor(queue_name=unique_name, actor_name="count")
    def count(name: str) -> None:
        runs.append(name)

    with running(broker, stamp, starts):
        count.send_with_options(args=("later",), delay=3_600_000)  # holds back the commit
        for i in range(20):
            count.send_with_options(args=(f"soon-{i}",), delay=300)
        wait_for(lambda: len(runs) == 20)
    # The delay topic's commit stays at the long delay, but its metadata
    # tells the next worker which records behind it were moved already.
    with running(broker, stamp, starts):
        time.sleep(3)
    assert sorted(runs) == sorted(f"soon-{i}" for i in range(20))
