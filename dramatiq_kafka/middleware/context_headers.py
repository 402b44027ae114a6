"""How each value ``CurrentContext`` carries travels in a record header.

A registered name ``n`` travels as JSON in ``dramatiq_ctx.<n>``; the W3C
trace headers (``traceparent``, ``tracestate``) as raw text.  Here is one
carried name (:class:`Carried`) with its encoding and decoding; which
names are carried, and when values are set and reset, is the middleware's
(``context.py``).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..errors import ContextError
from ..tracecontext import TRACEPARENT_HEADER, TRACESTATE_HEADER, valid_traceparent, valid_tracestate

#: Every carried name ``n`` travels in the header ``dramatiq_ctx.<n>`` (a JSON value).
CONTEXT_HEADER_PREFIX: Final = "dramatiq_ctx."


class MalformedTrace(ValueError):
    """A trace header that is not W3C's: ignored, never fatal (W3C's rule)."""


@dataclass(frozen=True)
class Carried:
    """One carried name: where its value lives and how it travels."""

    name: str
    header: str
    var: contextvars.ContextVar[Any]
    #: Set for a job whose record lacks the header; ``None``: left alone.
    absent: tuple[Any] | None
    #: The W3C headers travel as raw text, everything else as JSON.
    raw: bool = False

    def encode(self, value: Any, *, traced: bool) -> bytes | None:
        """The header's value for ``value``; ``None`` when a trace header is
        not carried (no value, or a ``tracestate`` without ``traced``, a
        ``traceparent`` beside it).

        Raises:
          ContextError: When ``value`` is not JSON that comes back equal,
            or not a W3C trace header.
        """
        return self._encode_trace(value, traced) if self.raw else encode_json(self.name, value)

    def _encode_trace(self, value: Any, traced: bool) -> bytes | None:
        if value is None:
            return None
        if self.name == TRACEPARENT_HEADER:
            if not valid_traceparent(value):
                raise ContextError(
                    "TraceContext.traceparent is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
                    "TraceContext.traceparent",
                )
        elif not traced:  # a tracestate without a traceparent means nothing
            return None
        elif not valid_tracestate(value):
            raise ContextError(
                "TraceContext.tracestate is not a W3C tracestate (printable ASCII text)",
                "TraceContext.tracestate",
            )
        return str(value).encode("ascii")

    def decode(self, data: bytes) -> Any:
        """The value a header's ``data`` carries.

        Raises:
          MalformedTrace: For a trace header that is not W3C's.
          orjson.JSONDecodeError: For any other header that is not JSON.
        """
        if not self.raw:
            return orjson.loads(data)
        text = data.decode("ascii", errors="replace")
        if self.header == TRACEPARENT_HEADER and not valid_traceparent(text):
            raise MalformedTrace(self.header)
        if self.header == TRACESTATE_HEADER and not valid_tracestate(text):
            raise MalformedTrace(self.header)
        return text


def default_of(var: contextvars.ContextVar[Any]) -> tuple[Any] | None:
    """A ContextVar's default, or ``None`` when it has none."""
    try:
        return (contextvars.Context().run(var.get),)
    except LookupError:
        return None


def encode_json(name: str, value: Any) -> bytes:
    """``value`` as JSON, when it comes back equal.

    Raises:
      ContextError: Naming ``name`` and the value's type, never the value.
    """
    kind = type(value).__name__
    try:
        data = orjson.dumps(value)
    except TypeError as e:
        raise ContextError(f"{name} cannot be carried: a {kind} value is not JSON ({e})", name) from None
    back = orjson.loads(data)
    if back != value:
        raise ContextError(
            f"{name} cannot be carried: a {kind} value would come back as {type(back).__name__}; "
            "carry str, int, float, bool, None, or lists and str-keyed dicts of them",
            name,
        )
    return data
