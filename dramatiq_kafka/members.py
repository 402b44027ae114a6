"""The process's members of the workers' group, and which one fetches a topic.

A broker asks :class:`GroupMembers` for the member of each consumer it hands
out; the member itself (``group.py``) is the librdkafka consumer.  A starting
worker asks for its queues' consumers one by one: the members wait for all of
them before they subscribe, so the group rebalances once, not once per queue.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from .group import GroupMember

__all__ = ["WORKER_BOOT_WAIT", "GroupMembers"]

#: Seconds the group member of a starting worker waits for all its queues' consumers
#: before it subscribes (one rebalance, not one per queue).
WORKER_BOOT_WAIT = 5.0


class GroupMembers:
    """The group members of one process: one, unless queues need different
    consumer settings or one queue is consumed twice in a process.

    Parameters:
      group_id(str): The workers' consumer group (for the members' names).
    """

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.members: list[GroupMember] = []
        self._lock = threading.Lock()
        # The queues a starting worker will consume and has not asked for yet.
        self._awaited: set[str] = set()
        self._awaited_until = 0.0

    def await_queues(self, queues: Iterable[str]) -> None:
        """A worker is starting: it will ask for the consumers of ``queues``."""
        self._awaited = set(queues)
        self._awaited_until = time.monotonic() + WORKER_BOOT_WAIT

    def member_for(self, queue_name: str, topic: str, config: dict[str, Any]) -> GroupMember:
        """The member that fetches ``topic`` (of ``queue_name``) with ``config``.

        With KIP-848's protocol, the one with these settings, unless it consumes ``topic``
        already (two workers in one process): its range assignor spreads each topic over
        the group's members.  With the classic protocol, one per topic: librdkafka's
        cooperative-sticky assignor balances the number of partitions per member, not per
        topic, and moved whole topics (one member held every partition of the queue, the
        other those of its delay queue and ran no job).
        """
        with self._lock:
            self._awaited.discard(queue_name)
            pid = os.getpid()
            # Members of a parent process are no use after a fork, nor closed ones (their
            # consumers left, or failed and were replaced).
            self.members = [m for m in self.members if m.pid == pid and not m.closed]
            for member in self.members:
                if member.shared and member.config == config and not member.serves(topic):
                    return member
            shared = config.get("group.protocol", "classic") == "consumer"
            name = f"group {self.group_id!r}" if shared else repr(topic)
            member = GroupMember(config, name=name, hold=self._worker_booting)
            self.members.append(member)
            return member

    def _worker_booting(self) -> bool:
        return bool(self._awaited) and time.monotonic() < self._awaited_until
