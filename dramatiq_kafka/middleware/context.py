"""Carrying request-scoped values (user, tenant, locale, trace ids) into jobs.

Values are read when a job is enqueued, written as Kafka record headers,
set again in the worker before the job runs and reset after it::

    class Current(CurrentAttributes):
        tenant: str | None = None
        user_id: int | None = None

    broker.add_middleware(CurrentContext(Current, request_id))  # request_id: a ContextVar

    Current.tenant = "acme"
    charge.send(42)  # charge() sees Current.tenant == "acme"

See ``docs/wire-format.md`` for the headers, so that producers in other
languages can set them.

Only the middleware lives here: the ``CurrentAttributes`` holders are
``current.py``'s, ``TraceContext`` and the W3C header checks
``tracecontext.py``'s (both names stay importable from here).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import dramatiq
import orjson
from dramatiq.logging import get_logger
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage

from ..current import NO_VALUE, CurrentAttributes
from ..errors import ConfigurationError, ContextError, ContextTooLarge
from ..tracecontext import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    TraceContext,
    valid_traceparent,
    valid_tracestate,
)
from ..wire import Headers
from .context_headers import CONTEXT_HEADER_PREFIX, Carried, MalformedTrace, default_of
from .headers import RecordHeaders

__all__ = [
    "CONTEXT_HEADER_PREFIX",
    "DEFAULT_MAX_CONTEXT_BYTES",
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "ContextError",
    "ContextTooLarge",
    "CurrentAttributes",
    "CurrentContext",
    "InvalidContext",
    "TraceContext",
    "valid_traceparent",
    "valid_tracestate",
]

#: The default bound on the carried context: header names and values, in bytes.
DEFAULT_MAX_CONTEXT_BYTES: Final = 8192


# -- the middleware ----------------------------------------------------------------------------------


class InvalidContext(ContextError, SkipMessage):
    """A record carries a context header that cannot be decoded.

    Raised in the worker before the job runs; the job does not run and
    is dead-lettered with this error, rather than run without the context
    it was sent with.
    """


@dataclass
class _Job:
    """The context of the job a worker thread runs."""

    message_id: str
    headers: Headers
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = field(default_factory=list)
    finished: bool = False


class CurrentContext(RecordHeaders):
    """Carries registered values from where a job is enqueued into the job.

    At enqueue, every registered value set in the current context is
    written to the record as a header; the worker sets those values again
    before the job runs (any other registered value is unset for the job)
    and resets them after it, whether it succeeded, failed, is retried or
    dead-lettered.  Jobs enqueued from a job carry the values in force
    there; a retry or a delayed message carries the values it was sent
    with.  ``async def`` actors see the values too: Dramatiq's ``AsyncIO``
    middleware runs them in a copy of the worker thread's context.
    Middleware added after this one sees the job's values in its
    ``before_process_message`` and ``after_process_message`` hooks;
    middleware added before it does not, but what it enqueues after the
    job (Retries, Pipelines, Callbacks) carries the job's context.

    Only registered names are read from a record: other headers, even ones
    that look like context, set nothing.  A record whose header for a
    registered name is not JSON is dead-lettered with
    :class:`InvalidContext` without running.

    What can be registered:

    * a :class:`CurrentAttributes` class: each of its attributes travels
      as ``<holder>.<attribute>``;
    * a :class:`contextvars.ContextVar`: travels under its name, unless
      it holds its default.  When a record does not carry it, the job runs
      with the variable's default; a variable without a default is then
      left as the worker thread has it, so give carried variables a
      default for full isolation.

    Values must be JSON that comes back equal: ``str``, ``int``, ``float``,
    ``bool``, ``None``, lists and ``str``-keyed dicts of them (a tuple would
    come back as a list, a ``datetime`` as a string: both are refused).

    Parameters:
      *things: ``CurrentAttributes`` classes and ``ContextVar`` objects to
        carry; more may be added with :meth:`register`.
      max_bytes(int): The largest context (header names and values, in
        bytes) a job may carry.
      trace_context(bool): Whether :class:`TraceContext` travels in the
        W3C ``traceparent``/``tracestate`` headers.

    Raises:
      ConfigurationError: When a thing cannot be registered, or two carry
        the same name.
    """

    def __init__(
        self,
        *things: type[CurrentAttributes] | contextvars.ContextVar[Any],
        max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
        trace_context: bool = True,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigurationError(f"CurrentContext: max_bytes={max_bytes!r} must be a positive integer")
        self.max_bytes = max_bytes
        self.trace_context = trace_context
        self._lock = threading.Lock()
        self._registered: list[type[CurrentAttributes] | contextvars.ContextVar[Any]] = []
        self._carried: tuple[Carried, ...] = ()
        self._by_header: dict[str, Carried] = {}
        # The job being run in this context (a worker thread's, or the copy
        # an async actor runs in), kept after it ended until it is acked.
        self._job: contextvars.ContextVar[_Job | None] = contextvars.ContextVar(
            f"CurrentContext.job@{id(self):x}", default=None
        )
        # Delayed messages held by consumer threads, until handed back to
        # their queue: message id -> the context headers they arrived with.
        self._delayed: dict[str, Headers] = {}
        if trace_context:
            self._add(
                Carried(name, name, attribute.var, (NO_VALUE,), raw=True)
                for name, attribute in (
                    (TRACEPARENT_HEADER, TraceContext.__context_attributes__["traceparent"]),
                    (TRACESTATE_HEADER, TraceContext.__context_attributes__["tracestate"]),
                )
            )
        self.register(*things)

    # -- registering ---------------------------------------------------------------------------------

    def register(self, *things: type[CurrentAttributes] | contextvars.ContextVar[Any]) -> None:
        """Carry more values.  Registering a thing twice changes nothing.

        Parameters:
          *things: ``CurrentAttributes`` classes and ``ContextVar`` objects.

        Raises:
          ConfigurationError: When a thing is neither, or its name is
            already carried by another.
        """
        for thing in things:
            if any(thing is known for known in self._registered):
                continue
            if isinstance(thing, contextvars.ContextVar):
                self._add([Carried(thing.name, CONTEXT_HEADER_PREFIX + thing.name, thing, default_of(thing))])
            elif isinstance(thing, type) and issubclass(thing, CurrentAttributes):
                if thing is TraceContext:
                    raise ConfigurationError(
                        "TraceContext travels in the W3C traceparent/tracestate headers: "
                        "use CurrentContext(trace_context=True) instead of registering it"
                    )
                if not thing.__context_attributes__:
                    raise ConfigurationError(f"{thing.__name__} declares no attributes to carry")
                self._add(
                    Carried(
                        attribute.qualified_name,
                        CONTEXT_HEADER_PREFIX + attribute.qualified_name,
                        attribute.var,
                        (NO_VALUE,),
                    )
                    for attribute in thing.__context_attributes__.values()
                )
            else:
                raise ConfigurationError(
                    f"CurrentContext carries ContextVar objects and CurrentAttributes classes, not {thing!r}"
                )
            self._registered.append(thing)

    def _add(self, carried: Iterable[Carried]) -> None:
        with self._lock:
            by_header = dict(self._by_header)
            for entry in carried:
                if entry.header in by_header:
                    raise ConfigurationError(
                        f"CurrentContext: the name {entry.name!r} is carried twice; "
                        "name holders apart with class Holder(CurrentAttributes, name='...')"
                    )
                by_header[entry.header] = entry
            # Replaced whole: threads that enqueue read them without the lock.
            self._by_header = by_header
            self._carried = tuple(by_header.values())

    @property
    def names(self) -> list[str]:
        """The carried names, as they appear after the header prefix."""
        return [entry.name for entry in self._carried]

    # -- enqueue -------------------------------------------------------------------------------------

    def capture(self) -> Headers:
        """The headers that carry the registered values set in the current context.

        Raises:
          ContextError: When a value is not JSON that comes back equal, or
            ``TraceContext.traceparent`` is not a W3C ``traceparent``.
          ContextTooLarge: When the headers exceed ``max_bytes``.
        """
        headers: Headers = []
        sizes: list[tuple[int, str]] = []
        traced = False
        for entry in self._carried:
            value = entry.var.get(NO_VALUE)
            # Unset, or what the job would get anyway (a ContextVar's default).
            if value is NO_VALUE or (entry.absent is not None and value is entry.absent[0]):
                continue
            data = entry.encode(value, traced=traced)
            if data is None:
                continue
            traced = traced or entry.raw
            headers.append((entry.header, data))
            sizes.append((len(entry.header.encode()) + len(data), entry.name))
        total = sum(size for size, _ in sizes)
        if total > self.max_bytes:
            largest = ", ".join(f"{name} ({size} bytes)" for size, name in sorted(sizes, reverse=True)[:3])
            raise ContextTooLarge(
                f"The context carried into the job is {total} bytes, over the bound of {self.max_bytes} "
                f"(CurrentContext(max_bytes=...)); the largest: {largest}"
            )
        return headers

    def record_headers(self, broker: dramatiq.Broker, message: Message[Any]) -> Headers:
        """The context headers of ``message``'s record.

        A message re-enqueued under its own id (a retry, a delayed message
        handed back to its queue) carries the context it arrived with.  A
        message sent after a job ended, by middleware such as Pipelines or
        Callbacks, carries the job's.  Any other message carries the
        values in force in the current context.

        Raises:
          ContextError: When a value cannot be carried.
          ContextTooLarge: When the context exceeds ``max_bytes``.
        """
        job = self._job.get()
        if job is not None and job.message_id == message.message_id:
            return list(job.headers)
        with self._lock:
            delayed = self._delayed.pop(message.message_id, None)
        if delayed is not None:
            return list(delayed)
        if job is not None and job.finished:
            return list(job.headers)
        try:
            return self.capture()
        except ContextError as e:
            where = f"Message {message.message_id} to actor {message.actor_name!r}"
            raise type(e)(f"{where}: {e}", e.name) from None

    # -- the worker ----------------------------------------------------------------------------------

    def _received(self, message: Any) -> Headers:
        """The context headers of a message's record: registered names only,
        the last of repeated ones."""
        record = getattr(message, "record", None)
        found: dict[str, bytes] = {}
        if record is not None:
            for key, value in record.headers() or ():
                if key in self._by_header and isinstance(value, bytes):
                    found[key] = value
        return list(found.items())

    def _decode(self, message: Any, headers: Headers) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, data in headers:
            assert isinstance(data, bytes)
            entry = self._by_header[key]
            try:
                values[key] = entry.decode(data)
            except MalformedTrace:
                self.logger.warning("Message %s: ignoring a malformed %s.", message.message_id, key)
            except orjson.JSONDecodeError as e:
                raise InvalidContext(
                    f"Message {message.message_id}: the header {key!r} is not JSON ({e})", entry.name
                ) from None
        if TRACEPARENT_HEADER not in values:
            values.pop(TRACESTATE_HEADER, None)
        return values

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Set the values the message carries; unset the other registered ones.

        Raises:
          InvalidContext: When a registered header cannot be decoded (the
            message is failed, and dead-lettered without running).
        """
        self._end_job(self._job.get())  # normally ended already
        headers = self._received(message)
        job = _Job(message.message_id, headers)
        self._job.set(job)
        try:
            values = self._decode(message, headers)
        except InvalidContext:
            job.headers = []
            job.finished = True
            message.fail()
            raise
        for entry in self._carried:
            if entry.header in values:
                job.tokens.append((entry.var, entry.var.set(values[entry.header])))
            elif entry.absent is not None:
                job.tokens.append((entry.var, entry.var.set(entry.absent[0])))
        self.logger.debug(
            "Message %s runs with %s.",
            message.message_id,
            ", ".join(key for key, _ in headers) or "no context",
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Reset the values set for the job, whatever its outcome."""
        self._end_job(self._current_job(message))

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Reset the values set for the job."""
        self._end_job(self._current_job(message))

    def _current_job(self, message: Any) -> _Job | None:
        job = self._job.get()
        return job if job is not None and job.message_id == message.message_id else None

    def _end_job(self, job: _Job | None) -> None:
        if job is None or job.finished:
            return
        job.finished = True
        for var, token in reversed(job.tokens):
            try:
                var.reset(token)
            except ValueError:  # set in another context: nothing of ours to undo here
                self.logger.warning("Could not reset %s after message %s.", var.name, job.message_id)
        job.tokens.clear()

    def before_delay_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """Keep a delayed message's context until it is handed back to its queue."""
        headers = self._received(message)
        with self._lock:
            self._delayed[message.message_id] = headers

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        self._forget(message)

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self._forget(message)

    def _forget(self, message: Any) -> None:
        if "eta" in message.options:
            with self._lock:
                self._delayed.pop(message.message_id, None)
        elif self._current_job(message) is not None:
            self._end_job(self._job.get())
            self._job.set(None)
