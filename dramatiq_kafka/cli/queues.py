"""The commands about queues' topics: ``topics``, ``topics ensure`` and ``lag``.

The topics' names come from ``topics.py``, the readings from ``admin.py``;
dead letters are ``dlq.py``'s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from ..delays import TIERS
from ..errors import KafkaBrokerError
from ..topics import topic_specs
from .connection import Context
from .exits import EXIT_FAILED, EXIT_OK
from .output import print_json, print_table


def cmd_topics(args: argparse.Namespace, ctx: Context) -> int:
    admin = ctx.admin()
    try:
        topics = admin.topic_names()
        rows: list[tuple[object, ...]] = []
        data: list[dict[str, Any]] = []
        for queue in ctx.queues(topics, args.queue):
            for kind, topic in ctx.topology.topics(queue).kinds():
                if topic not in topics:
                    rows.append((queue, kind, topic, "missing", "", ""))
                    data.append({"queue": queue, "kind": kind, "topic": topic, "exists": False})
                    continue
                watermarks = admin.watermarks(topic)
                messages = sum(high - low for low, high in watermarks.values())
                ends = " ".join(f"{p}:{high}" for p, (_, high) in sorted(watermarks.items()))
                rows.append((queue, kind, topic, len(watermarks), messages, ends))
                data.append(
                    {
                        "queue": queue,
                        "kind": kind,
                        "topic": topic,
                        "exists": True,
                        "partitions": len(watermarks),
                        "messages": messages,
                        "end_offsets": {str(p): high for p, (_, high) in sorted(watermarks.items())},
                    }
                )
    finally:
        admin.close()
    if args.json:
        print_json(ctx.out, data)
    elif rows:
        print_table(ctx.out, ("QUEUE", "KIND", "TOPIC", "PARTITIONS", "MESSAGES", "END OFFSETS"), rows)
    else:
        ctx.out.write(f"No queue topics at {ctx.bootstrap_servers!r} (prefix {ctx.prefix!r}).\n")
    return EXIT_OK


def cmd_topics_ensure(args: argparse.Namespace, ctx: Context) -> int:
    broker = ctx.broker
    assert broker is not None
    # The topics the broker would create, with its QueueConfig; only the
    # connection (and --prefix) come from the command line.
    queues = sorted(broker.get_declared_queues())
    topology = ctx.topology
    specs = {}
    for queue in queues:
        specs.update(
            topic_specs(topology.queue_config(queue), topology.topics(queue), delay_partitions=TIERS)
        )
    admin = ctx.admin()
    try:
        before = admin.topic_names()
        admin.ensure(specs)
        # A created topic takes a moment to show in the metadata.
        deadline = time.monotonic() + ctx.timeout
        while not set(specs) <= (after := admin.topic_names()) and time.monotonic() < deadline:
            time.sleep(0.2)
        short = dict(admin.short_topics)
        if args.add_partitions:
            for topic, (_, total) in short.items():
                admin.add_partitions(topic, total)
    finally:
        admin.close()
    rows = []
    for queue in queues:
        for topic in dict.fromkeys(topology.topics(queue)):
            state = "exists" if topic in before else ("created" if topic in after else "missing")
            if topic in short:
                have, total = short[topic]
                if args.add_partitions:
                    state = f"partitions added ({have} -> {total})"
                else:
                    state = f"too few partitions ({have} of {total})"
            rows.append((queue, topic, state))
    if args.json:
        print_json(ctx.out, [{"queue": q, "topic": t, "state": s} for q, t, s in rows])
    elif rows:
        print_table(ctx.out, ("QUEUE", "TOPIC", "STATE"), rows)
    else:
        ctx.out.write(f"{args.module!r} declares no queue (no actor).\n")
    if short and not args.add_partitions:
        ctx.err.write(
            "dramatiq-kafka: warning: a topic has fewer partitions than its QueueConfig asks; "
            "--add-partitions adds them. Records already there stay put, but new records of a key may "
            "go to another partition: order per key holds only among records sent after the change, "
            "so add them while the queue is drained.\n"
        )
    bad = ("missing", "too few")
    return EXIT_OK if not any(state.startswith(bad) for _, _, state in rows) else EXIT_FAILED


def cmd_lag(args: argparse.Namespace, ctx: Context) -> int:
    admin = ctx.admin()
    try:
        topics = admin.topic_names()
        data: list[dict[str, Any]] = []
        for found in admin.queue_lags(ctx.queues(topics, args.queue), ctx.topology, topics):
            if found.partitions is None:
                if found.name == found.queue and args.queue:
                    raise KafkaBrokerError(
                        f"The topic {found.topic!r} of queue {found.queue!r} does not exist."
                    )
                continue
            # A share group commits no offset, and confluent-kafka's admin client cannot
            # read its progress (KIP-932): its queue's lag is unknown, not every record.
            share_group = ctx.share_group_of(found.name)
            for lag in found.partitions:
                row: dict[str, Any] = {
                    "queue": found.name,
                    "topic": found.topic,
                    "partition": lag.partition,
                    "committed": None if share_group else lag.committed,
                    "low": lag.low,
                    "end": lag.end,
                    "lag": None if share_group else lag.lag,
                }
                if share_group:
                    row["share_group"] = share_group
                data.append(row)
    finally:
        admin.close()
    grouped = [d for d in data if "share_group" not in d]
    if ctx.group_given and grouped and all(d["committed"] < 0 for d in grouped):
        # A typo in --group shows every record as lag: say so rather than alarm.
        ctx.err.write(
            f"dramatiq-kafka: warning: group {ctx.group!r} has no committed offset on these topics "
            "(a typo in --group? every record counts as lag).\n"
        )
    if args.json:
        total = sum(d["lag"] for d in grouped)
        print_json(ctx.out, {"group": ctx.group, "partitions": data, "total": total})
        return EXIT_OK
    ctx.out.write(f"Group {ctx.group!r} at {ctx.bootstrap_servers!r}\n")
    rows: list[Sequence[object]] = []
    for queue in dict.fromkeys(d["queue"] for d in data):
        own = [d for d in data if d["queue"] == queue]
        for d in own:
            committed = "-" if d["committed"] is None or d["committed"] < 0 else d["committed"]
            rows.append((queue, d["partition"], committed, d["end"], "-" if d["lag"] is None else d["lag"]))
        shared = own[0].get("share_group")
        rows.append((queue, "total", "", "", "-" if shared else sum(d["lag"] for d in own)))
    if rows:
        print_table(ctx.out, ("QUEUE", "PARTITION", "COMMITTED", "END", "LAG"), rows)
    else:
        ctx.out.write("No queue topics.\n")
    for share_group in dict.fromkeys(d["share_group"] for d in data if "share_group" in d):
        ctx.out.write(
            f"Share group {share_group!r} commits no offset and its progress cannot be read here: "
            f"`kafka-share-groups.sh --describe --group {share_group}` shows it.\n"
        )
    return EXIT_OK
