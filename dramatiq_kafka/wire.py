"""The record format: a Dramatiq message as JSON, plus a few headers.

Any language can enqueue a job by writing a record whose value is the JSON
below to the queue's topic; see ``docs/wire-format.md``.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Message as KafkaRecord
from dramatiq.errors import DecodeError
from dramatiq.message import Message

#: Header with the actor's name, so tools can route without decoding.
ACTOR_HEADER = "dramatiq_actor"
#: Header with the message id.
MESSAGE_ID_HEADER = "dramatiq_message_id"

Headers = list[tuple[str, str | bytes | None]]

_REQUIRED_FIELDS = ("actor_name", "message_id")
#: Options the broker and Dramatiq's middleware compute with: a record from
#: another producer with the wrong type would fail far from its cause (in
#: the consumer, not the job), so it is refused with a reason instead.
_COUNT_OPTIONS = ("retries", "max_retries")
_NUMBER_OPTIONS = ("min_backoff", "max_backoff", "time_limit", "max_age")
#: Options that hold Python objects: no record can carry them.
_CODE_OPTIONS = ("retry_when", "throws")
_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")


def encode_message(message: Message[Any]) -> bytes:
    """Serialise a message as the record's value."""
    if type(message) is Message:
        # orjson writes a dataclass's fields in order, as asdict() would,
        # five times faster; proxies and subclasses go through asdict().
        return orjson.dumps(message)
    return orjson.dumps(message.asdict())


def message_headers(message: Message[Any]) -> Headers:
    """The headers every record of a message carries."""
    return [
        (ACTOR_HEADER, message.actor_name.encode()),
        (MESSAGE_ID_HEADER, message.message_id.encode()),
    ]


def message_id_of(value: bytes | None) -> str:
    """The message id in a record value we wrote, or ``"<unknown>"``."""
    try:
        message_id = orjson.loads(value or b"").get("message_id")
    except (orjson.JSONDecodeError, AttributeError):
        return "<unknown>"
    return message_id if isinstance(message_id, str) else "<unknown>"


def headers_of(record: KafkaRecord) -> Headers:
    """A consumed record's headers, as a list to send on."""
    headers = record.headers() or []
    return list(headers.items() if isinstance(headers, dict) else headers)


def decode_message(value: bytes | None, queue_name: str) -> Message[Any]:
    """Rebuild the message of a record read from ``queue_name``'s topic.

    The queue name is taken from the consumer rather than from the value,
    so a record written by another producer always comes back to the queue
    it was read from.

    Raises:
      DecodeError: When the value is not a JSON message.
    """
    if value is None:
        raise DecodeError("The record has no value (a tombstone).", value, None)
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"The record value is not JSON: {e}", value, e) from None
    if not isinstance(data, dict):
        raise DecodeError(f"The record value is JSON {type(data).__name__}, not an object.", value, None)
    missing = [name for name in _REQUIRED_FIELDS if not isinstance(data.get(name), str)]
    if missing:
        raise DecodeError(f"The record value lacks the string field(s) {', '.join(missing)}.", value, None)
    fields = {name: data[name] for name in _FIELDS if name in data}
    for name, kind, json_name in (
        ("args", list, "array"),
        ("kwargs", dict, "object"),
        ("options", dict, "object"),
    ):
        if name in fields and not isinstance(fields[name], kind):
            raise DecodeError(f"The record's field {name!r} is not a JSON {json_name}.", value, None)
    _check_options(fields.get("options", {}), value)
    fields["queue_name"] = queue_name
    fields["args"] = tuple(fields.get("args", ()))
    fields.setdefault("kwargs", {})
    fields.setdefault("options", {})
    try:
        return Message(**fields)
    except TypeError as e:
        raise DecodeError(f"The record is not a Dramatiq message: {e}", value, e) from None


def _check_options(options: dict[str, Any], value: bytes) -> None:
    for name in _COUNT_OPTIONS:
        option = options.get(name)
        if option is not None and (isinstance(option, bool) or not isinstance(option, int) or option < 0):
            raise DecodeError(f"The record's option {name!r} is {option!r}, not a count >= 0.", value, None)
    for name in _NUMBER_OPTIONS:
        option = options.get(name)
        if option is not None and (
            isinstance(option, bool) or not isinstance(option, int | float) or option < 0
        ):
            raise DecodeError(f"The record's option {name!r} is {option!r}, not a number >= 0.", value, None)
    if options.get("retries", 0) is None:
        raise DecodeError("The record's option 'retries' is null, not a count >= 0.", value, None)
    exhausted = options.get("on_retry_exhausted")
    if exhausted is not None and not isinstance(exhausted, str):
        raise DecodeError(
            f"The record's option 'on_retry_exhausted' is {exhausted!r}, not an actor name.", value, None
        )
    for name in _CODE_OPTIONS:
        if name in options:
            raise DecodeError(
                f"The record sets the option {name!r}, which only an actor can set (it holds Python code).",
                value,
                None,
            )
