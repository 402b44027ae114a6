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
