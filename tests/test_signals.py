"""Signals reach the middleware that handle them, as with Dramatiq's own broker."""

from __future__ import annotations

from typing import Any

import pytest
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.middleware import RecordHeaders
from dramatiq_kafka.wire import encode_message


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"before {self.name}")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"after {self.name}")


def bare_broker() -> KafkaBroker:
    # No network: the broker's clients are created lazily.
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    broker.middleware.clear()
    return broker


def test_before_signals_run_in_order_and_after_signals_in_reverse() -> None:
    calls: list[str] = []
    broker = bare_broker()
    broker.add_middleware(Recorder("a", calls))
    broker.add_middleware(Recorder("b", calls))
    message = Message(queue_name="q", actor_name="x", args=(), kwargs={}, options={})
    broker.emit_before("enqueue", message, None)
    broker.emit_after("enqueue", message, None)
    assert calls == ["before a", "before b", "after b", "after a"]


def test_middleware_added_later_and_lists_changed_in_place_are_seen() -> None:
    calls: list[str] = []
    broker = bare_broker()
    broker.add_middleware(Recorder("a", calls))
    broker.emit_before("enqueue", None, None)
    broker.add_middleware(Recorder("b", calls))
    broker.emit_before("enqueue", None, None)
    broker.middleware[0] = Recorder("c", calls)
    broker.emit_before("enqueue", None, None)
    assert calls == ["before a", "before a", "before b", "before c", "before b"]


def test_a_hook_set_on_an_instance_is_called() -> None:
    calls: list[str] = []
    broker = bare_broker()
    middleware = Middleware()
    middleware.before_consumer_thread_shutdown = lambda broker, thread: calls.append("shutdown")  # type: ignore[method-assign]
    broker.add_middleware(middleware)
    broker.emit_before("consumer_thread_shutdown", None)
    assert calls == ["shutdown"]


def test_a_failing_hook_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Failing(Middleware):
        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            raise RuntimeError("boom")

    broker = bare_broker()
    broker.add_middleware(Failing())
    broker.add_middleware(Recorder("after the failure", calls))
    broker.emit_before("enqueue", None, None)
    assert calls == ["before after the failure"]
    assert "Unexpected failure in before_enqueue" in caplog.text


def test_a_middleware_error_stops_the_signal() -> None:
    calls: list[str] = []

    class Skipping(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise SkipMessage("skip")

    class Late(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            calls.append("late")

    broker = bare_broker()
    broker.add_middleware(Skipping())
    broker.add_middleware(Late())
    with pytest.raises(SkipMessage):
        broker.emit_before("process_message", None)
    assert calls == []


def test_record_header_middleware_are_found_by_type() -> None:
    broker = bare_broker()
    first, second = RecordHeaders(), RecordHeaders()
    broker.add_middleware(first)
    broker.add_middleware(Middleware())
    assert broker.middleware_of_type(RecordHeaders) == [first]
    broker.add_middleware(second)
    assert broker.middleware_of_type(RecordHeaders) == [first, second]


def test_a_proxy_or_a_subclass_is_encoded_like_its_message() -> None:
    from dramatiq.broker import MessageProxy

    message = Message(queue_name="q", actor_name="x", args=(1,), kwargs={"k": 2}, options={"o": 3})
    assert encode_message(MessageProxy(message)) == encode_message(message)
