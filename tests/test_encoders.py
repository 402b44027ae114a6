"""Dramatiq's global encoder decides what a record's value is, as with its own brokers."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pytest
from dramatiq.encoder import Encoder, JSONEncoder

from dramatiq_kafka import KafkaBroker
from tests.helpers import read_topic, run_worker


@pytest.fixture
def pickle_encoder() -> Iterator[dramatiq.PickleEncoder]:
    previous = dramatiq.get_encoder()
    encoder = dramatiq.PickleEncoder()
    dramatiq.set_encoder(encoder)
    yield encoder
    dramatiq.set_encoder(previous)


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value", [datetime(2026, 1, 2, tzinfo=UTC), uuid.UUID(int=7), {1, 2}, Color.RED, b"raw"], ids=repr
)
def test_a_value_dramatiqs_json_encoder_refuses_is_refused(
    broker: KafkaBroker, unique_name: str, value: object
) -> None:
    @dramatiq.actor(queue_name=unique_name)
    def job(x: object) -> None: ...

    with pytest.raises(TypeError) as ours:
        job.send(value)
    with pytest.raises(TypeError) as dramatiqs:
        JSONEncoder().encode({"args": [value]})
    assert str(ours.value) == str(dramatiqs.value)  # "Object of type datetime is not JSON serializable"


def test_json_values_arrive_as_dramatiqs_encoder_decodes_them(broker: KafkaBroker, unique_name: str) -> None:
    seen: list[Any] = []

    @dramatiq.actor(queue_name=unique_name)
    def job(*args: Any, **kwargs: Any) -> None:
        seen.append((args, kwargs))

    # An IntEnum is an int to json.dumps; a tuple a list; a huge int and NaN are json.dumps' own.
    args = (Level.HIGH, (1, "é"), 2**70, float("inf"), {"k": [None, True, 1.5]})
    job.send(*args, key="v")
    run_worker(broker, unique_name)
    expected = JSONEncoder().decode(JSONEncoder().encode({"args": args, "kwargs": {"key": "v"}}))
    assert seen == [(tuple(expected["args"]), expected["kwargs"])]


def test_the_record_value_is_the_messages_json(broker: KafkaBroker, unique_name: str) -> None:
    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job(x: int) -> None: ...

    message = job.send(1)
    (record,) = read_topic(broker.bootstrap_servers, unique_name, count=1)
    assert json.loads(record.value or b"") == message.asdict() | {"args": [1]}


def test_set_encoder_is_honoured_end_to_end(
    broker: KafkaBroker, unique_name: str, pickle_encoder: dramatiq.PickleEncoder
) -> None:
    seen: list[object] = []

    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job(when: datetime, key: uuid.UUID) -> None:
        seen.append((when, key))

    when, key = datetime(2026, 1, 2, tzinfo=UTC), uuid.UUID(int=7)
    message = job.send(when, key)
    (record,) = read_topic(broker.bootstrap_servers, unique_name, count=1)
    assert pickle_encoder.decode(record.value or b"")["args"] == (when, key)
    assert record.headers["dramatiq_actor"] == b"job"  # tools still route without decoding
    assert record.headers["dramatiq_message_id"] == message.message_id.encode()
    run_worker(broker, unique_name)
    assert seen == [(when, key)]


class Upper(Encoder):
    """A user's own encoder: JSON, with a marker, to see it is the one used."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return b"U" + json.dumps(data).encode()

    def decode(self, data: bytes) -> dict[str, Any]:
        if not data.startswith(b"U"):
            raise ValueError("not mine")
        return json.loads(data[1:])  # type: ignore[no-any-return]


def test_a_record_the_encoder_cannot_decode_is_dead_lettered(broker: KafkaBroker, unique_name: str) -> None:
    previous = dramatiq.get_encoder()
    ran: list[int] = []

    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job(x: int) -> None:
        ran.append(x)

    try:
        dramatiq.set_encoder(Upper())
        job.send(1)
        dramatiq.set_encoder(JSONEncoder())
        job.send(2)  # plain JSON: Upper refuses it
        dramatiq.set_encoder(Upper())
        run_worker(broker, unique_name, fail_fast=False)
    finally:
        dramatiq.set_encoder(previous)
    assert ran == [1]
    (dead,) = read_topic(broker.bootstrap_servers, f"{unique_name}.XQ", count=1)
    assert b"cannot be decoded by Upper" in dead.headers["error_message"]
