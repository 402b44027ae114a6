"""Carrying context into jobs, against a real Kafka node and an in-process worker."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import orjson
import pytest
from confluent_kafka import Producer
from dramatiq import Worker
from dramatiq.middleware import AsyncIO, Middleware

from dramatiq_kafka import (
    ContextError,
    CurrentAttributes,
    CurrentContext,
    KafkaBroker,
    QueueConfig,
    TraceContext,
)
from tests.helpers import read_topic, record_count, wait_for


class A(CurrentAttributes):
    a: int | None = None


class B(CurrentAttributes):
    b: int | None = None


class Current(CurrentAttributes):
    tenant: str | None = None
    user_id: int | None = None
    roles: Any = None


class Unregistered(CurrentAttributes):
    tenant: str | None = None


request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Probe(Middleware):
    """Sees the worker thread's tenant before CurrentContext sets the job's."""

    def __init__(self) -> None:
        self.before: list[tuple[str, Any]] = []

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.before.append((message.actor_name, Current.tenant))


def start_worker(broker: KafkaBroker, threads: int) -> Worker:
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


@pytest.fixture
def context(broker: KafkaBroker) -> CurrentContext:
    context = CurrentContext(Current, request_id)
    broker.add_middleware(context)
    return context


@pytest.fixture(autouse=True)
def _no_values_left_in_the_test_thread() -> Iterator[None]:
    yield
    leftovers = {**A.values(), **B.values(), **Current.values(), **TraceContext.values()}
    for holder in (A, B, Current, TraceContext):
        holder.reset()
    assert leftovers == {}, "a test left values set in its thread"


def test_every_job_sees_the_values_it_was_sent_with(broker: KafkaBroker, unique_name: str) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=12)
    broker.add_middleware(CurrentContext(A, B))
    seen: dict[int, list[tuple[Any, Any]]] = {}

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        first = A.a
        time.sleep(0.001)  # let the other threads run jobs in between
        seen.setdefault(i, []).append((first, B.b))
        A.a = B.b = -1  # must not reach the next job of this thread

    for i in range(1000):
        A.a, B.b = i, i + 1
        job.send(i)
    del A.a, B.b
    worker = start_worker(broker, 8)
    try:
        broker.join(unique_name, timeout=120_000)
    finally:
        worker.stop()

    assert seen == {i: [(i, i + 1)] for i in range(1000)}
    assert record_count(broker.bootstrap_servers, unique_name) == 1000


def test_a_failed_job_leaves_no_tenant_behind(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=1)  # one order: fail, then check
    probe = Probe()
    broker.add_middleware(probe, before=CurrentContext)
    seen: list[tuple[str, Any]] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=0)
    def fail() -> None:
        seen.append(("fail", Current.tenant))
        raise RuntimeError("the job failed")

    @dramatiq.actor(queue_name=unique_name)
    def check() -> None:
        seen.append(("check", Current.tenant))

    with Current.using(tenant="secret"):
        fail.send()
    check.send()
    worker = start_worker(broker, 1)
    try:
        broker.join(unique_name, timeout=60_000, fail_fast=False)
    finally:
        worker.stop()

    assert seen == [("fail", "secret"), ("check", None)]
    # Reset after the failure itself, not merely replaced by the next job's values.
    assert probe.before == [("fail", None), ("check", None)]
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["dramatiq_ctx.Current.tenant"] == b'"secret"'


def test_an_async_actor_sees_its_values_and_passes_them_on(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    broker.add_middleware(AsyncIO())
    seen: dict[str, tuple[Any, ...]] = {}
    done = threading.Event()

    @dramatiq.actor(queue_name=unique_name)
    async def parent() -> None:
        await asyncio.sleep(0.01)
        seen["parent"] = (Current.tenant, Current.user_id, request_id.get())
        Current.user_id = 8  # the child is sent with the values in force here
        child.send()

    @dramatiq.actor(queue_name=unique_name)
    async def child() -> None:
        seen["child"] = (Current.tenant, Current.user_id, request_id.get())
        done.set()

    with Current.using(tenant="acme", user_id=7):
        token = request_id.set("r-1")
        parent.send()
        request_id.reset(token)
    worker = start_worker(broker, 2)
    try:
        assert done.wait(60)
        broker.join(unique_name, timeout=60_000)
    finally:
        worker.stop()

    assert seen == {"parent": ("acme", 7, "r-1"), "child": ("acme", 8, "r-1")}


def test_a_job_enqueuing_a_job_passes_its_values_on(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    seen: dict[str, tuple[Any, ...]] = {}

    @dramatiq.actor(queue_name=unique_name)
    def parent() -> None:
        seen["parent"] = (Current.tenant, Current.roles, request_id.get())
        Current.roles = ["admin"]
        child.send()

    @dramatiq.actor(queue_name=unique_name)
    def child() -> None:
        seen["child"] = (Current.tenant, Current.roles, request_id.get())

    with Current.using(tenant="acme", roles={"read": True}):
        token = request_id.set("r-2")
        parent.send()
        request_id.reset(token)
    worker = start_worker(broker, 2)
    try:
        wait_for(lambda: "child" in seen, timeout=60)
        broker.join(unique_name, timeout=60_000)
    finally:
        worker.stop()

    assert seen == {"parent": ("acme", {"read": True}, "r-2"), "child": ("acme", ["admin"], "r-2")}


def test_a_retried_or_delayed_job_keeps_its_values(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    seen: list[tuple[str, Any]] = []

    @dramatiq.actor(queue_name=unique_name, max_retries=1, min_backoff=100, max_backoff=100)
    def flaky() -> None:
        seen.append(("flaky", Current.tenant))
        Current.tenant = "changed by the failed attempt"
        if len([s for s in seen if s[0] == "flaky"]) == 1:
            raise RuntimeError("first attempt fails")

    @dramatiq.actor(queue_name=unique_name)
    def later() -> None:
        seen.append(("later", Current.tenant))

    with Current.using(tenant="acme"):
        flaky.send()
        later.send_with_options(delay=200)
    worker = start_worker(broker, 2)
    try:
        wait_for(lambda: len(seen) == 3, timeout=60)
        broker.join(unique_name, timeout=60_000)
    finally:
        worker.stop()

    assert sorted(seen) == [("flaky", "acme"), ("flaky", "acme"), ("later", "acme")]


def test_a_value_that_cannot_be_carried_fails_at_enqueue(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job() -> None: ...

    with (
        Current.using(tenant="acme", roles={"since": object()}),
        pytest.raises(ContextError, match=r"actor 'job': Current\.roles cannot be carried") as raised,
    ):
        job.send()
    assert raised.value.name == "Current.roles"
    with Current.using(tenant="acme"):
        job.send()
    assert record_count(broker.bootstrap_servers, unique_name) == 1  # only the second


def test_a_record_from_another_producer_sets_registered_names_only(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    broker.queue_configs[unique_name] = QueueConfig(partitions=1)
    seen: list[dict[str, Any]] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        seen.append(
            {
                "current": Current.values(),
                "unregistered": Unregistered.values(),
                "request_id": request_id.get(),
                "trace": TraceContext.values(),
            }
        )

    broker.declare_queue(unique_name)
    broker.ensure_topics(unique_name)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

    def produce(i: int, headers: list[tuple[str, bytes]]) -> None:
        value = {"actor_name": "job", "message_id": f"m-{i}", "args": [i], "kwargs": {}, "options": {}}
        producer.produce(unique_name, orjson.dumps(value), headers=headers)

    # Unregistered names only: nothing is set.
    produce(
        0,
        [
            ("dramatiq_ctx.Unregistered.tenant", b'"evil"'),
            ("dramatiq_ctx.Current.admin", b"true"),
            ("dramatiq_ctx.session", b'"s"'),
            ("Current.tenant", b'"evil"'),
        ],
    )
    # As docs/wire-format.md tells another language to write them.
    produce(
        1,
        [
            ("dramatiq_ctx.Current.tenant", b'"acme"'),
            ("dramatiq_ctx.Current.user_id", b"42"),
            ("dramatiq_ctx.request_id", b'"r-3"'),
            ("traceparent", TRACEPARENT.encode()),
            ("tracestate", b"vendor=1"),
            ("dramatiq_ctx.Unregistered.tenant", b'"evil"'),
        ],
    )
    producer.flush(10)
    worker = start_worker(broker, 1)
    try:
        broker.join(unique_name, timeout=60_000)
    finally:
        worker.stop()

    nothing = {"current": {}, "unregistered": {}, "request_id": None, "trace": {}}
    assert seen == [
        nothing,
        {
            "current": {"tenant": "acme", "user_id": 42},
            "unregistered": {},
            "request_id": "r-3",
            "trace": {"traceparent": TRACEPARENT, "tracestate": "vendor=1"},
        },
    ]


def test_a_record_with_a_malformed_context_header_is_dead_lettered_unrun(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    ran: list[int] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(i: int) -> None:
        ran.append(i)

    broker.declare_queue(unique_name)
    broker.ensure_topics(unique_name)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    value = {"actor_name": "job", "message_id": "m-bad", "args": [1], "kwargs": {}, "options": {}}
    producer.produce(unique_name, orjson.dumps(value), headers=[("dramatiq_ctx.Current.tenant", b"acme")])
    producer.flush(10)
    with Current.using(tenant="acme"):
        job.send(2)
    worker = start_worker(broker, 2)
    try:
        broker.join(unique_name, timeout=60_000, fail_fast=False)
    finally:
        worker.stop()

    assert ran == [2]
    [dead] = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert dead.headers["error_type"] == b"InvalidContext"
    assert b"'dramatiq_ctx.Current.tenant' is not JSON" in dead.headers["error_message"]


def test_trace_context_travels_in_w3c_headers(
    broker: KafkaBroker, context: CurrentContext, unique_name: str
) -> None:
    seen: list[Any] = []

    @dramatiq.actor(queue_name=unique_name)
    def job() -> None:
        seen.append(TraceContext.traceparent)

    with TraceContext.using(traceparent=TRACEPARENT):
        job.send()
    worker = start_worker(broker, 1)
    try:
        broker.join(unique_name, timeout=60_000)
    finally:
        worker.stop()

    assert seen == [TRACEPARENT]
    [record] = read_topic(broker.bootstrap_servers, unique_name, count=1)
    assert record.headers["traceparent"] == TRACEPARENT.encode()
    assert "tracestate" not in record.headers
