"""Topology: what each queue of a broker is made of.

For a queue: its topic, delay topic and dead-letter topic (named by
``topics.py``), its resolved :class:`QueueConfig` and :class:`DeadLetter`, and
the :class:`RetryPolicy` of a message on it.  The broker, its consumers, the
command, the metrics and the dashboard all ask one :class:`Topology`, so a
name or a setting is resolved in one place.  Creating the topics is
``admin.py``'s; checking the settings is ``queue_config.py``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dramatiq.actor import Actor
from dramatiq.broker import MessageProxy
from dramatiq.common import dq_name, q_name
from dramatiq.message import Message

from .queue_config import DeadLetter, QueueConfig, Unset, dead_letter_of, queue_config_of
from .retry_policy import RetryPolicy
from .topics import QueueTopics, dead_letter_topic_name, topic_name

__all__ = ["DEFAULT_DEAD_LETTER", "Topology"]

#: Dead letters go to ``{queue}.XQ`` after the default number of retries.
DEFAULT_DEAD_LETTER = DeadLetter()


@dataclass(frozen=True)
class Topology:
    """The queues of a broker: their topics, settings and retry policies.

    Parameters:
      prefix(str): Prepended to every topic name.
      queues(dict[str, QueueConfig]): The settings of the queues that have their own.
      default_queue(QueueConfig): The settings of every other queue.
      dead_letter(DeadLetter): Where failed jobs go when a queue's config does
        not say; ``None``: they are retried until they succeed.
      actors(dict[str, Actor]): The broker's actors, whose options take part in
        a retry policy (the broker's own dict: actors declared later count).
    """

    prefix: str = ""
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    default_queue: QueueConfig = field(default_factory=QueueConfig)
    dead_letter: DeadLetter | None = DEFAULT_DEAD_LETTER
    actors: Mapping[str, Actor[Any, Any]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        prefix: str,
        queues: Mapping[str, QueueConfig | Mapping[str, Any]] | None,
        default_queue: QueueConfig | Mapping[str, Any] | None,
        dead_letter: DeadLetter | Mapping[str, Any] | None,
        actors: Mapping[str, Actor[Any, Any]],
    ) -> Topology:
        """The topology of a broker's settings, where a plain dict does for a
        ``QueueConfig`` or a ``DeadLetter`` (Django settings).

        Raises:
          ConfigurationError: Naming the setting that is not one.
        """
        return cls(
            prefix=prefix,
            queues={
                name: queue_config_of(queue, f"queues[{name!r}]") for name, queue in (queues or {}).items()
            },
            default_queue=(
                QueueConfig() if default_queue is None else queue_config_of(default_queue, "default_queue")
            ),
            dead_letter=dead_letter_of(dead_letter, "dead_letter"),
            actors=actors,
        )

    def with_prefix(self, prefix: str) -> Topology:
        """The same queues under another prefix (the command's ``--prefix``)."""
        return dataclasses.replace(self, prefix=prefix)

    def queue_config(self, queue_name: str) -> QueueConfig:
        """The settings of a queue (its delay queue shares them)."""
        return self.queues.get(q_name(queue_name), self.default_queue)

    def dead_letter_for(self, queue_name: str) -> DeadLetter | None:
        """A queue's dead-letter settings; ``None`` when it retries forever."""
        dead_letter = self.queue_config(queue_name).dead_letter
        return self.dead_letter if isinstance(dead_letter, Unset) else dead_letter

    def topic_name(self, queue_name: str) -> str:
        """The topic that holds a queue (or a delay queue)."""
        return topic_name(self.prefix, queue_name)

    def dead_letter_topic(self, queue_name: str) -> str:
        """The topic where a queue's failed jobs go (and, even for a queue
        that retries forever, records that are not jobs at all)."""
        dead_letter = self.dead_letter_for(queue_name) or DEFAULT_DEAD_LETTER
        return dead_letter_topic_name(self.prefix, queue_name, dead_letter.topic)

    def topics(self, queue_name: str) -> QueueTopics:
        """The three topics of a queue."""
        queue = q_name(queue_name)
        return QueueTopics(
            self.topic_name(queue), self.topic_name(dq_name(queue)), self.dead_letter_topic(queue)
        )

    def retry_policy(self, message: MessageProxy | Message[Any]) -> RetryPolicy:
        """How a failed message is retried: the broker's and the queue's
        settings, overridden by the actor's options, then the message's."""
        queue = self.queue_config(message.queue_name)
        dead_letter = self.dead_letter_for(message.queue_name)
        actor = self.actors.get(message.actor_name)
        options = {**(actor.options if actor is not None else {}), **message.options}
        defaults = RetryPolicy()
        if dead_letter is None:
            max_retries = None
        else:
            # As in Dramatiq, an actor's or message's max_retries=None retries forever.
            queue_default = (
                defaults.max_retries if dead_letter.max_retries is None else dead_letter.max_retries
            )
            max_retries = options.get("max_retries", queue_default)
        min_backoff = defaults.min_backoff if queue.min_backoff is None else queue.min_backoff
        max_backoff = defaults.max_backoff if queue.max_backoff is None else queue.max_backoff
        return RetryPolicy(
            max_retries=max_retries,
            min_backoff=options.get("min_backoff", min_backoff),
            max_backoff=options.get("max_backoff", max_backoff),
            independent=dead_letter is not None and dead_letter.independent,
            retry_when=options.get("retry_when"),
            on_exhausted=options.get("on_retry_exhausted"),
        )

    def refusal(self, message: Message[Any]) -> str | None:
        """Why a decoded message is no job of its queue (it is dead-lettered
        unrun), or ``None``."""
        actor = self.actors.get(message.actor_name)
        queue_name = q_name(message.queue_name)
        if actor is not None and actor.queue_name != queue_name:
            return f"Actor {actor.actor_name!r} belongs to queue {actor.queue_name!r}, not {queue_name!r}."
        exhausted = message.options.get("on_retry_exhausted")
        if exhausted is not None and exhausted not in self.actors:
            return f"The option on_retry_exhausted names no known actor ({exhausted!r})."
        return None
