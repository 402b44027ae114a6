"""Checking option values, and the levels they are merged from.

Options merge broker → queue → actor → ``GenericActor`` base classes →
message: each level overrides only the options it sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import dramatiq

from .errors import ConfigurationError

#: The values ``dispatch_method`` and ``dispatch_many_method`` accept.
DISPATCH_METHODS = ("async", "sync")

#: A partition key: a fixed string, or a callable of the job's args and kwargs.
PartitionKey = str | Callable[..., Any]


def check_dispatch_method(value: Any, where: str, name: str = "dispatch_method") -> str:
    """Return ``value`` when it is a dispatch method, else raise naming ``where``."""
    if value not in DISPATCH_METHODS:
        allowed = ", ".join(map(repr, DISPATCH_METHODS))
        raise ConfigurationError(f"{where}: {name}={value!r} is not one of {allowed}")
    return str(value)


def check_timeout(value: Any, where: str) -> float:
    """Return ``value`` when it is a positive number of seconds, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{where}: sync_timeout={value!r} must be a positive number of seconds")
    return float(value)


def check_partition_key(value: Any, where: str) -> PartitionKey:
    """Return ``value`` when it is a string or a callable, else raise."""
    if not (isinstance(value, str) or callable(value)):
        raise ConfigurationError(
            f"{where}: partition_key={value!r} must be a string or a callable of the job's arguments"
        )
    return value  # type: ignore[no-any-return]


#: How each dispatch option is checked.
CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "dispatch_method": check_dispatch_method,
    "dispatch_many_method": lambda value, where: check_dispatch_method(value, where, "dispatch_many_method"),
    "sync_timeout": check_timeout,
    "partition_key": check_partition_key,
}


def check_options(options: dict[str, Any], where: str) -> None:
    """Check every dispatch option ``options`` sets."""
    for name, check in CHECKS.items():
        if options.get(name) is not None:
            check(options[name], where)


def inherit_generic_options(actor: dramatiq.Actor[Any, Any], names: Iterable[str]) -> None:
    """Fill in the options a ``GenericActor``'s own ``Meta`` leaves unset from
    its base classes' ``Meta`` (the nearest base wins).

    Dramatiq reads only the class's own ``Meta``, so a subclass declaring a
    ``Meta`` of its own would otherwise lose everything its bases set.  The
    bases are only read: a subclass never changes its parent.
    """
    if not isinstance(actor.fn, dramatiq.GenericActor):
        return
    for base in type(actor.fn).__mro__[1:]:
        meta = base.__dict__.get("Meta")
        for name in names:
            if meta is not None and name not in actor.options and name in vars(meta):
                actor.options[name] = vars(meta)[name]
