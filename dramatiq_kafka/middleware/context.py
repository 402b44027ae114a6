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
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import threading
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

import dramatiq
import orjson
from dramatiq.logging import get_logger
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage

from ..errors import ConfigurationError, ContextError, ContextTooLarge
from ..wire import Headers
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

#: Every carried name ``n`` travels in the header ``dramatiq_ctx.<n>`` (a JSON value).
CONTEXT_HEADER_PREFIX: Final = "dramatiq_ctx."
#: The W3C Trace Context headers (raw text, as every W3C propagator writes them).
TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"
#: The default bound on the carried context: header names and values, in bytes.
DEFAULT_MAX_CONTEXT_BYTES: Final = 8192


class _Unset:
    """The value of an attribute that was never set (or was deleted)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()

# -- attribute holders -------------------------------------------------------------------------------

#: Names of ``CurrentAttributes`` methods, which no attribute may take.
_RESERVED = frozenset({"values", "reset", "using"})
#: Defaults that one context could change in place under another's feet.
_MUTABLE_DEFAULTS = (list, dict, set, bytearray)


class _Attribute:
    """One attribute of a ``CurrentAttributes`` class, kept in a ContextVar."""

    def __init__(self, holder: str, name: str, default: Any) -> None:
        self.qualified_name = f"{holder}.{name}"
        self.default = default
        # No ContextVar default: an unset attribute must be told from one set
        # to its default, which is carried while the unset one is not.
        self.var: contextvars.ContextVar[Any] = contextvars.ContextVar(self.qualified_name)

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        value = self.var.get(_UNSET)
        if value is _UNSET:
            if self.default is _UNSET:
                raise AttributeError(f"{self.qualified_name} is not set")
            return self.default
        return value

    def __repr__(self) -> str:
        return f"<attribute {self.qualified_name}>"


def _is_class_var(annotation: Any) -> bool:
    if isinstance(annotation, str):  # ``from __future__ import annotations``
        return re.match(r"^\s*(typing\.|t\.)?ClassVar\b", annotation) is not None
    return annotation is ClassVar or typing.get_origin(annotation) is ClassVar


class _CurrentAttributesMeta(type):
    """Routes assignments and deletions of a holder's attributes to their ContextVars."""

    def _attribute(cls, name: str) -> _Attribute | None:
        attributes: dict[str, _Attribute] = cls.__dict__.get("__context_attributes__", {})
        return attributes.get(name)

    def __setattr__(cls, name: str, value: Any) -> None:
        attribute = cls._attribute(name)
        if attribute is not None:
            attribute.var.set(value)
        elif name.startswith("_") or name in cls.__dict__:
            super().__setattr__(name, value)
        else:
            raise AttributeError(
                f"{cls.__name__} has no attribute {name!r}: declare it in the class body "
                f"({name}: str | None = None)"
            )

    def __delattr__(cls, name: str) -> None:
        attribute = cls._attribute(name)
        if attribute is not None:
            attribute.var.set(_UNSET)
        else:
            super().__delattr__(name)


class CurrentAttributes(metaclass=_CurrentAttributesMeta):
    """A class whose attributes are per-request globals, like Rails' ``Current``.

    Declare the attributes with annotations; read and assign them on the
    class itself::

        class Current(CurrentAttributes):
            tenant: str | None = None
            user_id: int | None = None

        Current.tenant = "acme"

    Every attribute is kept in its own :class:`contextvars.ContextVar`, so
    a value set in one thread or asyncio task is never seen by another:
    two requests (or two jobs) handled at once each see their own.  A
    thread starts with every attribute unset; an asyncio task starts with
    the values in force where it was created.  An unset attribute reads as
    its default, and an attribute declared without a default raises
    ``AttributeError`` until it is set.  ``del Current.tenant`` unsets it.

    Registered with :class:`CurrentContext`, the attributes set when a
    job is enqueued are set again while it runs.  Each travels under the
    name ``<holder>.<attribute>``, where the holder's name is the class
    name unless given: ``class Current(CurrentAttributes, name="app")``.

    Holders cannot be instantiated nor subclassed, and defaults must not
    be mutable (a list would be shared by every context).  Values are
    stored as they are: mutating a list in place changes it wherever it
    is seen.

    Parameters:
      name(str): The holder's name in record headers (class keyword).

    Raises:
      ConfigurationError: When the class is declared with a mutable
        default, an attribute named like a method, or a holder base.
    """

    __context_name__: ClassVar[str] = ""
    __context_attributes__: ClassVar[dict[str, _Attribute]] = {}

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__mro__[1:]:
            if issubclass(base, CurrentAttributes) and base.__context_attributes__:
                raise ConfigurationError(
                    f"{cls.__name__} cannot subclass {base.__name__}: holders of current attributes "
                    "are final; declare the attributes in one class"
                )
        holder = name or cls.__name__
        attributes: dict[str, _Attribute] = {}
        for attr, annotation in inspect.get_annotations(cls).items():
            if attr.startswith("_") or _is_class_var(annotation):
                continue
            if attr in _RESERVED:
                raise ConfigurationError(
                    f"{holder}.{attr}: {attr!r} is the name of a CurrentAttributes method"
                )
            default = cls.__dict__.get(attr, _UNSET)
            if isinstance(default, _MUTABLE_DEFAULTS):
                raise ConfigurationError(
                    f"{holder}.{attr}: a mutable default ({type(default).__name__}) would be shared by "
                    "every context; default to None and set the value where it is needed"
                )
            attributes[attr] = _Attribute(holder, attr, default)
        type.__setattr__(cls, "__context_name__", holder)
        type.__setattr__(cls, "__context_attributes__", attributes)
        for attr, attribute in attributes.items():
            type.__setattr__(cls, attr, attribute)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        raise TypeError(f"{cls.__name__} is not instantiated: read and set its attributes on the class")

    @classmethod
    def values(cls) -> dict[str, Any]:
        """The attributes set in the current context, by name."""
        found = {name: attribute.var.get(_UNSET) for name, attribute in cls.__context_attributes__.items()}
        return {name: value for name, value in found.items() if value is not _UNSET}

    @classmethod
    def reset(cls) -> None:
        """Unset every attribute in the current context."""
        for attribute in cls.__context_attributes__.values():
            attribute.var.set(_UNSET)

    @classmethod
    @contextlib.contextmanager
    def using(cls, **values: Any) -> Iterator[None]:
        """Set attributes for the duration of a ``with`` block, then restore
        what was there before::

            with Current.using(tenant="acme", user_id=7):
                charge.send(42)

        Raises:
          AttributeError: When a name is not an attribute of the class.
        """
        unknown = sorted(set(values) - set(cls.__context_attributes__))
        if unknown:
            raise AttributeError(f"{cls.__name__} has no attribute(s) {', '.join(unknown)}")
        variables = [(cls.__context_attributes__[name].var, value) for name, value in values.items()]
        tokens = [(var, var.set(value)) for var, value in variables]
        try:
            yield
        finally:
            for var, token in reversed(tokens):
                var.reset(token)


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


# -- the middleware ----------------------------------------------------------------------------------

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


class InvalidContext(ContextError, SkipMessage):
    """A record carries a context header that cannot be decoded.

    Raised in the worker before the job runs; the job does not run and
    is dead-lettered with this error, rather than run without the context
    it was sent with.
    """


@dataclass(frozen=True)
class _Carried:
    """One carried name: where its value lives and how it travels."""

    name: str
    header: str
    var: contextvars.ContextVar[Any]
    #: Set for a job whose record lacks the header; ``None``: left alone.
    absent: tuple[Any] | None
    #: The W3C headers travel as raw text, everything else as JSON.
    raw: bool = False


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
        self._carried: tuple[_Carried, ...] = ()
        self._by_header: dict[str, _Carried] = {}
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
                _Carried(name, name, attribute.var, (_UNSET,), raw=True)
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
                self._add(
                    [_Carried(thing.name, CONTEXT_HEADER_PREFIX + thing.name, thing, _default_of(thing))]
                )
            elif isinstance(thing, type) and issubclass(thing, CurrentAttributes):
                if thing is TraceContext:
                    raise ConfigurationError(
                        "TraceContext travels in the W3C traceparent/tracestate headers: "
                        "use CurrentContext(trace_context=True) instead of registering it"
                    )
                if not thing.__context_attributes__:
                    raise ConfigurationError(f"{thing.__name__} declares no attributes to carry")
                self._add(
                    _Carried(
                        attribute.qualified_name,
                        CONTEXT_HEADER_PREFIX + attribute.qualified_name,
                        attribute.var,
                        (_UNSET,),
                    )
                    for attribute in thing.__context_attributes__.values()
                )
            else:
                raise ConfigurationError(
                    f"CurrentContext carries ContextVar objects and CurrentAttributes classes, not {thing!r}"
                )
            self._registered.append(thing)

    def _add(self, carried: Iterable[_Carried]) -> None:
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
            value = entry.var.get(_UNSET)
            # Unset, or what the job would get anyway (a ContextVar's default).
            if value is _UNSET or (entry.absent is not None and value is entry.absent[0]):
                continue
            if entry.raw:
                data = self._encode_trace(entry, value, traced)
                if data is None:
                    continue
                traced = True
            else:
                data = _encode(entry.name, value)
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

    def _encode_trace(self, entry: _Carried, value: Any, traced: bool) -> bytes | None:
        if value is None:
            return None
        if entry.name == TRACEPARENT_HEADER:
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
            if not entry.raw:
                try:
                    values[key] = orjson.loads(data)
                except orjson.JSONDecodeError as e:
                    raise InvalidContext(
                        f"Message {message.message_id}: the header {key!r} is not JSON ({e})", entry.name
                    ) from None
                continue
            # W3C: a malformed trace header is ignored, never fatal.
            text = data.decode("ascii", errors="replace")
            if key == TRACEPARENT_HEADER and not valid_traceparent(text):
                self.logger.warning("Message %s: ignoring a malformed traceparent.", message.message_id)
            elif key == TRACESTATE_HEADER and not valid_tracestate(text):
                self.logger.warning("Message %s: ignoring a malformed tracestate.", message.message_id)
            else:
                values[key] = text
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


def _default_of(var: contextvars.ContextVar[Any]) -> tuple[Any] | None:
    """A ContextVar's default, or ``None`` when it has none."""
    try:
        return (contextvars.Context().run(var.get),)
    except LookupError:
        return None


def _encode(name: str, value: Any) -> bytes:
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
