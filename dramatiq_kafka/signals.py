"""Emitting middleware signals without calling every middleware's no-op.

Dramatiq's ``Broker.emit_before``/``emit_after`` look up and call the hook
of every middleware for every signal, though most middleware implement a
few hooks and inherit ``Middleware``'s empty ones for the rest.  With the
dozen middleware a worker has, that was a tenth of the time of a
``send()`` and of each job's life (``before_process_message``,
``after_ack``...).  :class:`CachedSignals` keeps, per signal, only the
hooks that do something, and rebuilds the list when the middleware change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError

Hook = Callable[..., Any]


def _overrides(middleware: Middleware, name: str) -> bool:
    """Whether ``middleware`` does anything on the signal ``name``."""
    if name in getattr(middleware, "__dict__", {}):
        return True
    return getattr(type(middleware), name, None) is not getattr(Middleware, name, None)


class CachedSignals(dramatiq.Broker):
    """A broker base whose signals reach only the middleware that handle them.

    Behaves as Dramatiq's ``Broker``: the same order (``after_`` signals in
    reverse), ``MiddlewareError`` from a ``before_`` hook propagates, any
    other exception is logged and the next hook runs.
    """

    _hooks_of: tuple[Middleware, ...] | None = None
    _hooks: dict[str, list[Any]]

    def _cache(self) -> dict[str, list[Any]]:
        middleware = tuple(self.middleware)
        if middleware != self._hooks_of:
            # add_middleware, or the list changed in place: look again.
            self._hooks = {}
            self._hooks_of = middleware
        return self._hooks

    def _hooks_for(self, name: str) -> list[tuple[Middleware, Hook]]:
        cache = self._cache()
        hooks = cache.get(name)
        if hooks is None:
            ordered = self.middleware if name.startswith("before_") else self.middleware[::-1]
            hooks = cache[name] = [(m, getattr(m, name)) for m in ordered if _overrides(m, name)]
        return hooks

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "before_" + signal
        for middleware, hook in self._hooks_for(name):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "after_" + signal
        for middleware, hook in self._hooks_for(name):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, middleware, exc_info=True)

    def middleware_of_type(self, kind: type[Any]) -> list[Any]:
        """The middleware that are instances of ``kind``, in order (cached like the hooks)."""
        cache = self._cache()
        key = f"instances of {kind.__module__}.{kind.__qualname__}"
        found = cache.get(key)
        if found is None:
            found = cache[key] = [m for m in self.middleware if isinstance(m, kind)]
        return found
