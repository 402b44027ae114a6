"""The record format, and what happens to records that are not messages."""

from __future__ import annotations

import orjson
import pytest
from dramatiq.errors import DecodeError
from dramatiq.message import Message
from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka.wire import decode_message, encode_message, message_headers


def test_a_message_survives_the_round_trip_and_keeps_its_queue() -> None:
    message = Message(queue_name="q", actor_name="add", args=(1, "a"), kwargs={"k": [1]}, options={"x": 1})
    assert decode_message(encode_message(message), "q") == message
    assert dict(message_headers(message)) == {
        "dramatiq_actor": b"add",
        "dramatiq_message_id": message.message_id.encode(),
    }


def test_the_queue_name_comes_from_the_topic_read() -> None:
    value = orjson.dumps({"queue_name": "elsewhere", "actor_name": "add", "message_id": "m1"})
    message = decode_message(value, "default")
    assert (message.queue_name, message.args, message.kwargs, message.options) == ("default", (), {}, {})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"\xff\x00garbage", "not JSON"),
        (b'{"actor_name": "a"', "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"args": []}', "actor_name, message_id"),
        (b'{"actor_name": "a", "message_id": "m", "args": 5}', "'args' is not a JSON array"),
        (b'{"actor_name": "a", "message_id": "m", "kwargs": []}', "'kwargs' is not a JSON object"),
    ],
)
def test_records_that_are_not_messages_are_refused_with_the_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_message(value, "q")


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_decode_or_raise_decode_error(value: bytes) -> None:
    try:
        decode_message(value, "q")
    except DecodeError:
        pass


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"retries": None}, "'retries' is null"),
        ({"retries": "1"}, "'retries' is '1', not a count"),
        ({"retries": True}, "'retries' is True"),
        ({"max_retries": -1}, "'max_retries' is -1"),
        ({"min_backoff": [1]}, "'min_backoff' is \\[1\\], not a number"),
        ({"time_limit": "soon"}, "'time_limit' is 'soon'"),
        ({"on_retry_exhausted": 5}, "'on_retry_exhausted' is 5, not an actor name"),
        ({"retry_when": None}, "option 'retry_when', which only an actor can set"),
        ({"throws": "ValueError"}, "option 'throws'"),
    ],
)
def test_options_the_broker_computes_with_must_have_their_type(
    options: dict[str, object], reason: str
) -> None:
    value = orjson.dumps({"actor_name": "a", "message_id": "m", "options": options})
    with pytest.raises(DecodeError, match=reason):
        decode_message(value, "q")


def test_options_of_dramatiq_messages_pass() -> None:
    options = {"retries": 2, "max_retries": None, "min_backoff": 10.5, "time_limit": 1000, "eta": 5, "x": "y"}
    message = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options=options)
    assert decode_message(encode_message(message), "q").options == options


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {"actor_name": st.text() | json_values, "message_id": st.text() | json_values},
        optional={
            "args": json_values,
            "kwargs": json_values,
            "options": st.dictionaries(
                st.sampled_from(["retries", "max_retries", "min_backoff", "on_retry_exhausted", "throws"])
                | st.text(),
                json_values,
            ),
            "message_timestamp": json_values,
        },
    )
)
def test_any_json_object_either_decodes_or_raises_decode_error(data: dict[str, object]) -> None:
    try:
        message = decode_message(orjson.dumps(data), "q")
    except DecodeError:
        return
    assert isinstance(message.args, tuple) and isinstance(message.options, dict)
