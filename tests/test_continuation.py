"""Resumable jobs: steps, cursors, delayed resumes and retries, on a real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.continuation import Continuation, ContinuationError, Progress, Step, continuable
from tests.helpers import run_worker, wait_for


def test_outside_a_kafka_worker_a_job_runs_straight_through() -> None:
    dramatiq.set_broker(StubBroker())
    ran: list[str] = []

    @continuable
    def job(job: Continuation, n: int) -> None:
        job.step("a", lambda step: ran.append("a"))
        job.step("b", lambda step, n: [step.advance(i) or ran.append(f"b{i}") for i in range(n)], n)

    job(2)
    assert ran == ["a", "b0", "b1"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["finished", "step", "cursor", "resumptions", "x"]), JSON))
def test_progress_from_any_message_is_well_formed_and_round_trips(data: dict[str, object]) -> None:
    progress = Progress.from_options({"continuation": data})
    assert all(isinstance(name, str) for name in progress.finished)
    assert progress.step is None or isinstance(progress.step, str)
    assert Progress.from_options({"continuation": progress.as_option()}) == progress


def test_mistakes_are_named() -> None:
    @continuable
    def twice(job: Continuation) -> None:
        job.step("a", lambda step: None)
        job.step("a", lambda step: None)

    with pytest.raises(ContinuationError, match="step 'a' is used twice"):
        twice()

    @continuable
    def bad_cursor(job: Continuation) -> None:
        job.step("a", lambda step: step.advance({1, 2}))

    with pytest.raises(ContinuationError, match="step 'a': a set cursor cannot be carried"):
        bad_cursor()

    with pytest.raises(ContinuationError, match="resume_delay=-1"):
        continuable(resume_delay=-1)


def test_a_stopped_job_resumes_after_its_delay(
    make_broker: Callable[..., KafkaBroker], unique_name: str
) -> None:
    broker = make_broker(partitions=1)
    ran: list[tuple[str, float]] = []

    def items(step: Step) -> None:
        for i in range(step.cursor or 0, 5):
            ran.append((f"item{i}", time.time()))
            time.sleep(0.3)
            step.advance(i + 1)

    @dramatiq.actor(queue_name=unique_name, actor_name="stepped")
    @continuable(resume_delay=2000)
    def stepped(job: Continuation) -> None:
        job.step("one", lambda step: ran.append(("one", time.time())))
        job.step("two", items)

    stepped.send()
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    wait_for(lambda: len(ran) >= 3)  # one, item0, item1
    worker.stop()
    stopped = time.time()
    names = [name for name, _ in ran]
    assert names[0] == "one" and names[-1] in ("item1", "item2")
    run_worker(broker, unique_name, threads=1)
    names = [name for name, _ in ran]
    assert names == ["one", "item0", "item1", "item2", "item3", "item4"][: len(names)]
    assert len(names) == 6
    first_after_stop = min(at for _, at in ran if at > stopped)
    # The resume was sent just before the worker stopped, due 2 s later.
    assert first_after_stop - stopped >= 2.0 - 0.3


def test_a_failed_run_retries_from_where_it_failed(kafka_bootstrap: str, unique_name: str) -> None:
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={
            unique_name: QueueConfig(partitions=1, min_backoff=100, dead_letter=DeadLetter(max_retries=1))
        },
    )
    dramatiq.set_broker(broker)
    ran: list[str] = []

    def items(step: Step) -> None:
        for i in range(step.cursor or 0, 4):
            ran.append(f"item{i}")
            if i == 2 and ran.count("item2") == 1:
                raise RuntimeError("item 2 fails once")
            step.advance(i + 1)

    @dramatiq.actor(queue_name=unique_name, actor_name="stepped")
    @continuable
    def stepped(job: Continuation) -> None:
        job.step("one", lambda step: ran.append("one"))
        job.step("two", items)

    stepped.send()
    run_worker(broker, unique_name, threads=1)
    assert ran == ["one", "item0", "item1", "item2", "item2", "item3"]
