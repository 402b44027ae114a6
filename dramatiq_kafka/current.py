"""``CurrentAttributes``: per-request globals kept in ContextVars.

A holder class whose attributes each live in a :class:`contextvars.ContextVar`,
so that two requests (or jobs) handled at once each see their own values.
Nothing here knows of Kafka or Dramatiq: carrying the values into jobs is
the ``CurrentContext`` middleware's (``middleware/context.py``), the W3C
trace headers are ``tracecontext.py``'s.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import typing
from collections.abc import Iterator
from typing import Any, ClassVar, Final, Self

from .errors import ConfigurationError

__all__ = ["NO_VALUE", "CurrentAttributes"]


class _NoValue:
    """The value of an attribute that was never set (or was deleted)."""

    def __repr__(self) -> str:
        return "<no value>"


#: What an attribute holds in a context where it was never set (or was deleted).
NO_VALUE: Final = _NoValue()


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
        value = self.var.get(NO_VALUE)
        if value is NO_VALUE:
            if self.default is NO_VALUE:
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
            attribute.var.set(NO_VALUE)
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
            default = cls.__dict__.get(attr, NO_VALUE)
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
        found = {name: attribute.var.get(NO_VALUE) for name, attribute in cls.__context_attributes__.items()}
        return {name: value for name, value in found.items() if value is not NO_VALUE}

    @classmethod
    def reset(cls) -> None:
        """Unset every attribute in the current context."""
        for attribute in cls.__context_attributes__.values():
            attribute.var.set(NO_VALUE)

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
