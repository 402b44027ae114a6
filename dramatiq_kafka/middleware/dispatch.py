"""How ``send`` hands a message to Kafka: asynchronously or synchronously."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from ..errors import ConfigurationError

#: The values ``dispatch_method`` accepts.
DISPATCH_METHODS = ("async", "sync")


def check_dispatch_method(value: Any, where: str) -> str:
    """Return ``value`` when it is a dispatch method, else raise naming ``where``."""
    if value not in DISPATCH_METHODS:
        raise ConfigurationError(
            f"{where}: dispatch_method={value!r} is not one of {', '.join(map(repr, DISPATCH_METHODS))}"
        )
    return str(value)


def check_timeout(value: Any, where: str) -> float:
    """Return ``value`` when it is a positive number of seconds, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{where}: sync_timeout={value!r} must be a positive number of seconds")
    return float(value)


class DispatchOptions(Middleware):
    """Declares the ``dispatch_method`` and ``sync_timeout`` actor options.

    Values are checked when an actor is declared; a message's own
    options (``send_with_options``) override the actor's, which override
    the broker's defaults.

    Parameters:
      dispatch_method(str): The broker-wide default, ``"async"`` or ``"sync"``.
      sync_timeout(float): Seconds a sync send waits for Kafka.
    """

    actor_options = {"dispatch_method", "sync_timeout"}

    def __init__(self, *, dispatch_method: str = "async", sync_timeout: float = 10.0) -> None:
        self.dispatch_method = check_dispatch_method(dispatch_method, "KafkaBroker")
        self.sync_timeout = check_timeout(sync_timeout, "KafkaBroker")

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        where = f"actor {actor.actor_name!r}"
        if "dispatch_method" in actor.options:
            check_dispatch_method(actor.options["dispatch_method"], where)
        if "sync_timeout" in actor.options:
            check_timeout(actor.options["sync_timeout"], where)

    def sync_timeout_for(self, broker: dramatiq.Broker, message: Message[Any]) -> float | None:
        """Seconds to wait for ``message``'s delivery, or ``None`` to not wait."""
        actor = broker.actors.get(message.actor_name)
        actor_options = actor.options if actor is not None else {}
        where = f"message {message.message_id}"
        method = message.options.get(
            "dispatch_method", actor_options.get("dispatch_method", self.dispatch_method)
        )
        if check_dispatch_method(method, where) == "async":
            return None
        return check_timeout(
            message.options.get("sync_timeout", actor_options.get("sync_timeout", self.sync_timeout)), where
        )
