"""W3C Trace Context: the ``TraceContext`` holder and what a valid header is.

``TraceContext`` holds the ``traceparent`` and ``tracestate`` of the
current request or job (a :class:`~dramatiq_kafka.current.CurrentAttributes`);
:func:`valid_traceparent` and :func:`valid_tracestate` say whether a value
may travel in those headers.  Carrying them on Kafka records is the
``CurrentContext`` middleware's (``middleware/context.py``).
"""

from __future__ import annotations

import re
from typing import Final

from .current import CurrentAttributes

__all__ = ["TRACEPARENT_HEADER", "TRACESTATE_HEADER", "TraceContext", "valid_traceparent", "valid_tracestate"]

#: The W3C Trace Context headers (raw text, as every W3C propagator writes them).
TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"


class TraceContext(CurrentAttributes, name="trace"):
    """The W3C Trace Context of the current request or job.

    With ``CurrentContext(trace_context=True)`` (the default) these travel
    in the standard ``traceparent`` and ``tracestate`` headers, which
    OpenTelemetry and other W3C propagators read and write on Kafka
    records.  Set them where a request comes in (from its HTTP headers);
    a job sees the values it was sent with, and passes them on to the jobs
    it sends.  ``tracestate`` is carried only beside a ``traceparent``.
    """

    traceparent: str | None = None
    tracestate: str | None = None


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRACESTATE = re.compile(r"^[\x20-\x7e]*$")


def valid_traceparent(value: object) -> bool:
    """Whether ``value`` is a W3C ``traceparent`` (version 00, or a later
    version read as 00)."""
    if not isinstance(value, str):
        return False
    match = _TRACEPARENT.match(value)
    if match is None:
        return False
    version, trace_id, parent_id, _, rest = match.groups()
    return (
        version != "ff"
        and (version != "00" or rest is None)
        and trace_id != "0" * 32
        and parent_id != "0" * 16
    )


def valid_tracestate(value: object) -> bool:
    """Whether ``value`` is text a ``tracestate`` header may hold."""
    return isinstance(value, str) and _TRACESTATE.match(value) is not None
