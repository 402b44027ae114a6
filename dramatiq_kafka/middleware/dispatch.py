"""How ``send`` hands a message to Kafka: asynchronously or synchronously, with which key."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from ..options import CHECKS, check_options, inherit_generic_options

#: The options this middleware declares.
DISPATCH_OPTIONS = frozenset(CHECKS)


class DispatchOptions(Middleware):
    """Declares ``dispatch_method``, ``dispatch_many_method``, ``sync_timeout``
    and ``partition_key``.

    Values are checked when an actor is declared.  They merge broker →
    queue (``QueueConfig``) → actor → ``GenericActor`` base classes →
    message (``send_with_options``), each level overriding only what it
    sets.

    Parameters:
      dispatch_method(str): The broker-wide default, ``"async"`` or ``"sync"``.
      dispatch_many_method(str): The same for bulk enqueues.
      sync_timeout(float): Seconds a sync send waits for Kafka.
    """

    actor_options = set(DISPATCH_OPTIONS)

    def __init__(
        self,
        *,
        dispatch_method: str = "async",
        dispatch_many_method: str = "async",
        sync_timeout: float = 10.0,
    ) -> None:
        self.defaults: dict[str, Any] = {
            "dispatch_method": dispatch_method,
            "dispatch_many_method": dispatch_many_method,
            "sync_timeout": sync_timeout,
            "partition_key": None,
        }
        check_options(self.defaults, "KafkaBroker")

    @property
    def sync_timeout(self) -> float:
        return float(self.defaults["sync_timeout"])

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        inherit_generic_options(actor, DISPATCH_OPTIONS)
        check_options(actor.options, f"actor {actor.actor_name!r}")

    def option(self, broker: dramatiq.Broker, message: Message[Any], name: str) -> Any:
        """The value of a dispatch option for ``message``, from the nearest level that sets it."""
        if message.options.get(name) is not None:
            value = message.options[name]
            CHECKS[name](value, f"message {message.message_id}")
            return value
        actor = broker.actors.get(message.actor_name)
        if actor is not None and actor.options.get(name) is not None:
            return actor.options[name]
        queue_config = getattr(broker, "queue_config", None)
        queue_value = getattr(queue_config(message.queue_name), name, None) if queue_config else None
        return self.defaults[name] if queue_value is None else queue_value

    def sync_timeout_for(
        self, broker: dramatiq.Broker, message: Message[Any], *, many: bool = False
    ) -> float | None:
        """Seconds to wait for ``message``'s delivery, or ``None`` to not wait."""
        method = self.option(broker, message, "dispatch_many_method" if many else "dispatch_method")
        return None if method == "async" else float(self.option(broker, message, "sync_timeout"))

    def key_for(self, broker: dramatiq.Broker, message: Message[Any]) -> bytes | None:
        """The record key of ``message``: its ``partition_key``, applied."""
        key = self.option(broker, message, "partition_key")
        if key is None:
            return None
        if callable(key):
            key = key(*message.args, **message.kwargs)
        return key if isinstance(key, bytes) else str(key).encode()
