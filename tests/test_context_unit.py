"""Carrying context into jobs, without Kafka: holders, capture, restore, reset.

A job is played the way Dramatiq's worker plays it: ``before_process_message``,
the actor's body, then ``after_process_message`` or ``after_skip_message``,
on a message whose ``record`` has the headers written at enqueue.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import decimal
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import dramatiq
import pytest
from dramatiq.asyncio import EventLoopThread
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from dramatiq_kafka import (
    ConfigurationError,
    ContextError,
    ContextTooLarge,
    CurrentAttributes,
    CurrentContext,
    InvalidContext,
    TraceContext,
)

T = TypeVar("T")


class Current(CurrentAttributes):
    tenant: str | None = None
    user_id: int | None = None
    roles: Any = None
    kind: ClassVar[str] = "not carried"


class Other(CurrentAttributes, name="other"):
    locale: str = "en"
    token: str  # no default: unset reads raise


request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
no_default: contextvars.ContextVar[str] = contextvars.ContextVar("no_default")

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def broker() -> dramatiq.Broker:
    return StubBroker()


@pytest.fixture
def context() -> CurrentContext:
    return CurrentContext(Current, Other, request_id, no_default)


def fresh(fn: Callable[[], T]) -> T:
    """Run ``fn`` in an empty context, as a new thread would."""
    return contextvars.Context().run(fn)


class Record:
    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def new_message(actor: str = "job") -> Message[Any]:
    return Message(queue_name="q", actor_name=actor, args=(), kwargs={}, options={})


def received(headers: list[tuple[str, Any]] | None, message: Message[Any] | None = None) -> MessageProxy:
    proxy = MessageProxy(message or new_message())
    proxy.record = Record(headers)  # type: ignore[attr-defined]
    return proxy


def sent(context: CurrentContext, broker: dramatiq.Broker, **values: Any) -> list[tuple[str, Any]]:
    """The context headers of a message sent with ``Current`` set to ``values``."""

    def send() -> list[tuple[str, Any]]:
        with Current.using(**values):
            return context.record_headers(broker, new_message())

    return fresh(send)


def run_job(
    context: CurrentContext,
    broker: dramatiq.Broker,
    proxy: MessageProxy,
    body: Callable[[], T],
    *,
    fail: bool = False,
) -> T:
    """Play one job on the calling thread: restore, run, reset."""
    context.before_process_message(broker, proxy)
    try:
        result = body()
        if fail:
            raise RuntimeError("the job failed")
    except RuntimeError as e:
        context.after_process_message(broker, proxy, exception=e)
        return result
    context.after_process_message(broker, proxy, result=result)
    return result


def observe() -> dict[str, Any]:
    return {**Current.values(), **Other.values(), "request_id": request_id.get()}


# -- holders -----------------------------------------------------------------------------------------


def test_an_unset_attribute_reads_its_default_or_raises() -> None:
    def check() -> None:
        assert Current.tenant is None
        assert Other.locale == "en"
        with pytest.raises(AttributeError, match=r"other\.token is not set"):
            _ = Other.token
        Other.token = "t"
        Other.locale = "fr"
        assert (Other.token, Other.locale) == ("t", "fr")
        assert Other.values() == {"token": "t", "locale": "fr"}
        del Other.locale
        assert Other.locale == "en"
        assert Other.values() == {"token": "t"}
        Other.reset()
        assert Other.values() == {}
        assert Current.kind == "not carried"

    fresh(check)


def test_using_sets_for_a_block_then_restores() -> None:
    def check() -> None:
        Current.tenant = "outer"
        with Current.using(tenant="inner", user_id=7):
            assert (Current.tenant, Current.user_id) == ("inner", 7)
        assert (Current.tenant, Current.user_id) == ("outer", None)
        with pytest.raises(AttributeError, match="tenat"), Current.using(tenat="x"):
            pass

    fresh(check)


def test_attributes_never_bleed_between_threads() -> None:
    barrier = threading.Barrier(8)
    seen: dict[int, tuple[Any, Any]] = {}

    def work(i: int) -> None:
        Current.tenant = f"t{i}"
        barrier.wait()  # every thread has set its value before any reads
        Current.user_id = i
        barrier.wait()
        seen[i] = (Current.tenant, Current.user_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {i: (f"t{i}", i) for i in range(8)}
    assert fresh(lambda: Current.tenant) is None


def test_attributes_never_bleed_between_tasks() -> None:
    async def task(i: int) -> tuple[Any, Any]:
        Current.tenant = f"t{i}"
        await asyncio.sleep(0.01)
        return Current.tenant, i

    async def main() -> list[tuple[Any, Any]]:
        Current.tenant = "parent"
        results = await asyncio.gather(*(task(i) for i in range(10)))
        assert Current.tenant == "parent"
        return list(results)

    assert fresh(lambda: asyncio.run(main())) == [(f"t{i}", i) for i in range(10)]


def test_holders_refuse_what_would_break_them() -> None:
    with pytest.raises(ConfigurationError, match="mutable default"):

        class Bad(CurrentAttributes):
            roles: list[str] = []

    with pytest.raises(ConfigurationError, match="'values' is the name of a CurrentAttributes method"):

        class Clash(CurrentAttributes):
            values: int = 0

    with pytest.raises(ConfigurationError, match="cannot subclass Current"):

        class Sub(Current):
            extra: int = 0

    with pytest.raises(AttributeError, match="Current has no attribute 'tenat'"):
        Current.tenat = "x"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="not instantiated"):
        Current()


# -- registering -------------------------------------------------------------------------------------


def test_registration_refuses_clashes_and_strangers() -> None:
    class Twin(CurrentAttributes, name="Current"):
        tenant: str | None = None

    context = CurrentContext(Current, request_id)
    context.register(Current, request_id)  # again: nothing changes
    assert context.names == [
        "traceparent",
        "tracestate",
        "Current.tenant",
        "Current.user_id",
        "Current.roles",
        "request_id",
    ]
    with pytest.raises(ConfigurationError, match=r"'Current\.tenant' is carried twice"):
        context.register(Twin)
    with pytest.raises(ConfigurationError, match="carried twice"):
        context.register(contextvars.ContextVar("request_id"))
    with pytest.raises(ConfigurationError, match="not 'tenant'"):
        context.register("tenant")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="trace_context=True"):
        context.register(TraceContext)
    with pytest.raises(ConfigurationError, match="max_bytes=0"):
        CurrentContext(max_bytes=0)
    assert CurrentContext(trace_context=False).names == []


# -- capture and restore -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(tenant=st.text(), roles=json_values, token=st.none() | st.text(), rid=st.none() | st.text())
def test_what_is_captured_at_enqueue_is_what_the_job_sees(
    tenant: str, roles: Any, token: str | None, rid: str | None
) -> None:
    context = CurrentContext(Current, Other, request_id)
    broker = StubBroker()

    def enqueue() -> list[tuple[str, Any]]:
        Current.tenant = tenant
        Current.roles = roles
        if token is not None:
            Other.token = token
        request_id.set(rid)
        return context.record_headers(broker, new_message())

    headers = fresh(enqueue)
    expected = {"tenant": tenant, "roles": roles, "request_id": rid}
    if token is not None:
        expected["token"] = token

    def worker() -> None:
        seen = run_job(context, broker, received(headers), observe)
        assert seen == expected
        assert observe() == {"request_id": None}  # reset after the job

    fresh(worker)


def test_a_job_sees_only_what_its_record_carries_and_nothing_after(
    context: CurrentContext, broker: dramatiq.Broker
) -> None:
    def worker() -> None:
        # What an earlier job (or the thread) left is not seen by the job,
        # and what the job sets is gone after it.
        Current.user_id = 99
        request_id.set("left-over")
        no_default.set("thread")

        def body() -> dict[str, Any]:
            seen = observe()
            Current.roles = ["changed"]
            request_id.set("changed")
            no_default.set("changed")
            return seen

        seen = run_job(context, broker, received(sent(context, broker, tenant="acme")), body)
        assert seen == {"tenant": "acme", "request_id": None}
        assert observe() == {"user_id": 99, "request_id": "left-over"}
        # A ContextVar without a default that the record lacks is left alone
        # during the job: there is no way to unset it.  Its change is kept.
        assert no_default.get() == "changed"

    fresh(worker)


@pytest.mark.parametrize("ending", ["success", "failure", "skip"])
def test_values_are_reset_however_the_job_ends(
    context: CurrentContext, broker: dramatiq.Broker, ending: str
) -> None:
    def worker() -> None:
        proxy = received(sent(context, broker, tenant="secret"))
        context.before_process_message(broker, proxy)
        assert Current.tenant == "secret"
        if ending == "skip":
            context.after_skip_message(broker, proxy)
        elif ending == "failure":
            context.after_process_message(broker, proxy, exception=RuntimeError("boom"))
        else:
            context.after_process_message(broker, proxy, result=None)
        assert Current.tenant is None
        # The next job, sent without a tenant, sees none.
        assert run_job(context, broker, received(sent(context, broker)), lambda: Current.tenant) is None

    fresh(worker)


def test_unregistered_names_set_nothing(broker: dramatiq.Broker) -> None:
    context = CurrentContext(Current)
    headers = [
        ("dramatiq_ctx.other.locale", b'"fr"'),
        ("dramatiq_ctx.request_id", b'"r-1"'),
        ("dramatiq_ctx.Current.admin", b"true"),
        ("dramatiq_ctx.Current", b'{"tenant": "evil"}'),
        ("Current.tenant", b'"evil"'),
        ("tenant", b'"evil"'),
        ("dramatiq_ctx.Current.tenant", b'"acme"'),
    ]

    def worker() -> None:
        seen = run_job(context, broker, received(headers), observe)
        assert seen == {"tenant": "acme", "request_id": None}

    fresh(worker)


def test_the_last_of_repeated_headers_wins(context: CurrentContext, broker: dramatiq.Broker) -> None:
    headers = [("dramatiq_ctx.Current.tenant", b'"first"'), ("dramatiq_ctx.Current.tenant", b'"last"')]
    assert fresh(lambda: run_job(context, broker, received(headers), lambda: Current.tenant)) == "last"


def test_a_header_that_is_not_json_fails_the_message_before_it_runs(
    context: CurrentContext, broker: dramatiq.Broker
) -> None:
    proxy = received([("dramatiq_ctx.request_id", b'"ok"'), ("dramatiq_ctx.Current.tenant", b"acme")])

    def worker() -> None:
        with pytest.raises(InvalidContext, match=r"'dramatiq_ctx\.Current\.tenant' is not JSON") as raised:
            context.before_process_message(broker, proxy)
        assert raised.value.name == "Current.tenant"
        assert proxy.failed
        assert observe() == {"request_id": None}  # nothing was set, not even the valid header
        context.after_skip_message(broker, proxy)
        assert observe() == {"request_id": None}

    fresh(worker)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a", "b"}, "a set value is not JSON"),
        (object(), "a object value is not JSON"),
        (decimal.Decimal("1.5"), "a Decimal value is not JSON"),
        ({1: "x"}, "a dict value is not JSON"),
        (2**64, "a int value is not JSON"),
        (datetime.date(2024, 1, 1), "a date value would come back as str"),
        ((1, 2), "a tuple value would come back as list"),
        (math.nan, "a float value would come back as NoneType"),
        ([1, math.inf], "a list value would come back as list"),
    ],
)
def test_a_value_that_cannot_be_carried_is_refused_naming_the_attribute(
    context: CurrentContext, broker: dramatiq.Broker, value: Any, why: str
) -> None:
    def enqueue() -> None:
        Current.tenant = "fine"
        Current.roles = value
        with pytest.raises(ContextError) as raised:
            context.record_headers(broker, new_message("charge"))
        assert raised.value.name == "Current.roles"
        message = str(raised.value)
        assert "actor 'charge': Current.roles cannot be carried" in message
        assert why in message
        assert repr(value) not in message or isinstance(value, int)  # the value itself is never shown

    fresh(enqueue)


def test_the_carried_context_is_bounded(broker: dramatiq.Broker) -> None:
    context = CurrentContext(Current, max_bytes=100)

    def enqueue() -> list[tuple[str, Any]]:
        Current.tenant = "x" * 60
        Current.user_id = 1
        with pytest.raises(
            ContextTooLarge, match=r"over the bound of 100 .*the largest: Current.tenant \(89"
        ):
            context.record_headers(broker, new_message())
        Current.tenant = "x" * 40
        return context.record_headers(broker, new_message())

    headers = fresh(enqueue)
    assert sum(len(k) + len(v) for k, v in headers) <= 100


# -- follow-ups: retries, delays, jobs sent from jobs ------------------------------------------------


def test_a_job_sends_its_values_and_its_retry_the_ones_it_arrived_with(
    context: CurrentContext, broker: dramatiq.Broker
) -> None:
    proxy = received(sent(context, broker, tenant="acme", user_id=1))

    def worker() -> dict[str, Any]:
        context.before_process_message(broker, proxy)
        Current.user_id = 2  # changed by the job
        child = context.record_headers(broker, new_message())
        retry = context.record_headers(broker, proxy.copy(queue_name="q.DQ"))
        context.after_process_message(broker, proxy, exception=RuntimeError())
        # Sent after the job by middleware (Pipelines, Callbacks): the job's context.
        after = context.record_headers(broker, new_message())
        context.after_ack(broker, proxy)
        # The thread's next sends, outside any job, carry its own values.
        alone = context.record_headers(broker, new_message())
        return {"child": child, "retry": retry, "after": after, "alone": alone}

    headers = fresh(worker)
    assert dict(headers["child"]) == {
        "dramatiq_ctx.Current.tenant": b'"acme"',
        "dramatiq_ctx.Current.user_id": b"2",
    }
    assert dict(headers["retry"]) == dict(headers["after"]) == dict(proxy.record.headers() or [])
    assert dict(headers["retry"])["dramatiq_ctx.Current.user_id"] == b"1"
    assert headers["alone"] == []


def test_a_delayed_message_is_handed_back_with_its_context(
    context: CurrentContext, broker: dramatiq.Broker
) -> None:
    headers = sent(context, broker, tenant="acme")
    message = new_message().copy(queue_name="q.DQ", options={"eta": 1})
    proxy = received([*headers, ("unrelated", b"x")], message)

    def consumer_thread() -> tuple[Any, Any]:
        context.before_delay_message(broker, proxy)
        handed_back = context.record_headers(broker, message.copy(queue_name="q"))
        context.after_ack(broker, proxy)
        again = context.record_headers(broker, message.copy(queue_name="q"))
        return handed_back, again

    handed_back, again = fresh(consumer_thread)
    assert handed_back == headers
    assert again == []  # forgotten once handed back


def test_a_coroutine_on_the_event_loop_thread_sees_the_job_values(
    context: CurrentContext, broker: dramatiq.Broker
) -> None:
    # What Dramatiq's AsyncIO middleware does with an ``async def`` actor.
    loop_thread = EventLoopThread(logging.getLogger(__name__))
    loop_thread.start(timeout=5)

    async def body() -> tuple[Any, list[tuple[str, Any]]]:
        await asyncio.sleep(0)
        Current.user_id = 5
        return Current.tenant, context.record_headers(broker, new_message())

    def worker() -> tuple[Any, list[tuple[str, Any]]]:
        result = run_job(
            context,
            broker,
            received(sent(context, broker, tenant="acme")),
            lambda: loop_thread.run_coroutine(body()),
        )
        assert Current.user_id is None and Current.tenant is None
        return result

    try:
        tenant, child = fresh(worker)
    finally:
        loop_thread.stop()
    assert tenant == "acme"
    assert dict(child) == {"dramatiq_ctx.Current.tenant": b'"acme"', "dramatiq_ctx.Current.user_id": b"5"}


# -- W3C trace context -------------------------------------------------------------------------------


def test_trace_context_travels_in_the_w3c_headers(context: CurrentContext, broker: dramatiq.Broker) -> None:
    def enqueue(traceparent: Any, tracestate: Any) -> list[tuple[str, Any]]:
        def send() -> list[tuple[str, Any]]:
            with TraceContext.using(traceparent=traceparent, tracestate=tracestate):
                return context.record_headers(broker, new_message())

        return fresh(send)

    headers = enqueue(TRACEPARENT, "vendor=abc")
    assert headers == [("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=abc")]
    seen = fresh(
        lambda: run_job(
            context, broker, received(headers), lambda: (TraceContext.traceparent, TraceContext.tracestate)
        )
    )
    assert seen == (TRACEPARENT, "vendor=abc")
    assert enqueue(None, "vendor=abc") == []  # a tracestate alone means nothing
    for bad in ("00-xyz", TRACEPARENT.replace("4bf9", "4BF9"), "00-" + "0" * 32 + "-00f067aa0ba902b7-01", 42):
        with pytest.raises(ContextError, match=r"TraceContext\.traceparent is not a W3C traceparent"):
            enqueue(bad, None)
    assert CurrentContext(trace_context=False).capture() == []


def test_a_malformed_trace_header_is_ignored_not_fatal(
    context: CurrentContext, broker: dramatiq.Broker
) -> None:
    headers = [
        ("traceparent", b"garbage"),
        ("tracestate", b"vendor=abc"),
        ("dramatiq_ctx.request_id", b'"r"'),
    ]
    seen = fresh(
        lambda: run_job(context, broker, received(headers), lambda: (TraceContext.values(), request_id.get()))
    )
    assert seen == ({}, "r")


@pytest.fixture(autouse=True)
def _no_values_left_in_the_test_thread() -> Iterator[None]:
    yield
    assert Current.values() == {} and Other.values() == {} and TraceContext.values() == {}
