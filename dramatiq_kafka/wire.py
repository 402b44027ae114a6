"""The record format: a Dramatiq message as JSON, plus a few headers.

Any language can enqueue a job by writing a record whose value is the JSON
below to the queue's topic; see ``docs/wire-format.md``.

The value is encoded by Dramatiq's global encoder (``dramatiq.set_encoder``),
so what Dramatiq's ``JSONEncoder`` refuses (a ``datetime``, a ``UUID``, a
``set``) is refused here too, with its ``TypeError``.  With that encoder,
the default, messages made only of plain JSON values go through orjson,
which writes the same JSON fifteen times faster; anything else goes
through the encoder itself, which decides.
"""

from __future__ import annotations

import math
from typing import Any

import dramatiq
import orjson
from confluent_kafka import Message as KafkaRecord
from dramatiq.encoder import JSONEncoder
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
    """Serialise a message as the record's value, with Dramatiq's encoder.

    Raises:
      TypeError: When the encoder refuses a value (Dramatiq's
        ``JSONEncoder``: one that is not JSON, a ``datetime`` say).
    """
    encoder = dramatiq.get_encoder()
    if type(encoder) is JSONEncoder and _is_plain_json(message.args, message.kwargs, message.options):
        if type(message) is Message:
            # orjson writes a dataclass's fields in order, as asdict() would;
            # proxies and subclasses go through asdict().
            return orjson.dumps(message)
        return orjson.dumps(message.asdict())
    return encoder.encode(message.asdict())


def _is_plain_json(*values: Any) -> bool:
    """Whether every value is made of JSON's own types only, which orjson
    and Dramatiq's ``json.dumps`` write alike.  Anything else (a
    ``datetime``, a ``UUID`` or an ``Enum`` that orjson would write as a
    string, an ``int`` past 64 bits, a NaN) is left to Dramatiq's encoder."""
    stack = list(values)
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if kind is int:
            if -(2**63) <= value < 2**64:
                continue
            return False
        if kind is float:
            if math.isfinite(value):
                continue
            return False
        if kind is list or kind is tuple:
            stack.extend(value)
        elif kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    return False
                stack.append(item)
        else:
            return False
    return True


def message_headers(message: Message[Any]) -> Headers:
    """The headers every record of a message carries."""
    return [
        (ACTOR_HEADER, message.actor_name.encode()),
        (MESSAGE_ID_HEADER, message.message_id.encode()),
    ]


def message_id_of(value: bytes | None) -> str:
    """The message id in a record value we wrote, or ``"<unknown>"``."""
    try:
        message_id = _decode(value or b"").get("message_id")
    except Exception:
        return "<unknown>"
    return message_id if isinstance(message_id, str) else "<unknown>"


def _decode(value: bytes) -> Any:
    """A record value decoded by Dramatiq's encoder (orjson for its JSONEncoder).

    Raises:
      DecodeError: When the encoder cannot decode it.
    """
    encoder = dramatiq.get_encoder()
    if type(encoder) is JSONEncoder:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as e:
            # json reads what orjson refuses (NaN, which json.dumps writes): it decides.
            try:
                return encoder.decode(value)
            except Exception:
                raise DecodeError(f"The record value is not JSON: {e}", value, e) from None
    try:
        return encoder.decode(value)
    except Exception as e:
        raise DecodeError(
            f"The record value cannot be decoded by {type(encoder).__name__}: {e}", value, e
        ) from None


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
    data = _decode(value)
    if not isinstance(data, dict):
        raise DecodeError(f"The record value is JSON {type(data).__name__}, not an object.", value, None)
    missing = [name for name in _REQUIRED_FIELDS if not isinstance(data.get(name), str)]
    if missing:
        raise DecodeError(f"The record value lacks the string field(s) {', '.join(missing)}.", value, None)
    fields = {name: data[name] for name in _FIELDS if name in data}
    for name, kind, json_name in (
        ("args", list | tuple, "array"),  # a tuple from encoders other than JSON
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
