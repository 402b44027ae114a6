"""The dashboard's read-only pages: the overview, a queue, the workers.

Each function returns a page's body (see ``html.py``) from what :class:`Dashboard`
read; ``None`` for a queue that was never declared.  The dead letters' pages and
actions are ``dead_letters.py``.
"""

from __future__ import annotations

import time

from ..consumer_settings import CLIENT_ID_PREFIX
from ..delays import TIER_BOUNDS, TIERS, tier_partitions
from ..errors import KafkaBrokerError
from .charts import line_chart
from .html import Markup, escape, link, table
from .readings import Dashboard

__all__ = ["STALE_INTERVALS", "overview", "queue", "workers"]

#: A status record older than this many of its intervals marks its process stale.
STALE_INTERVALS = 3


def _rate(rates: tuple[float, float] | None, which: int) -> str:
    return "-" if rates is None else f"{rates[which]:,.1f}"


def overview(dashboard: Dashboard) -> Markup:
    rows = [
        [
            link(f"queue/{r['queue']}", r["queue"]),
            r["partitions"],
            r["end"],
            r["lag"],
            r["paused"],
            link(f"dead-letters/{r['queue']}", r["dead_letters"]) if r["dead_letters"] else 0,
            r["delayed"],
            _rate(r["rates"], 0),
            _rate(r["rates"], 1),
            line_chart(r["trend"], title=f"lag of {r['queue']}"),
        ]
        for r in dashboard.queue_rows()
    ]
    header = ["queue", "partitions", "end offsets", "lag", "paused", "dead letters", "delayed"]
    return table([*header, "jobs/s in", "jobs/s out", "lag, last hour"], rows)


def trends(dashboard: Dashboard, name: str) -> Markup:
    """A queue's lag and jobs per second over the samples of the last hour."""
    history = dashboard.history
    throughput = history.throughput(name)
    charts = [
        line_chart([(s.at, float(s.lag)) for s in history.samples(name)], title="lag", width=480, height=80),
        line_chart(
            [(at, sent) for at, sent, _ in throughput], title="jobs/s sent", width=480, height=80, unit="/s"
        ),
        line_chart(
            [(at, done) for at, _, done in throughput],
            title="jobs/s finished",
            width=480,
            height=80,
            unit="/s",
        ),
    ]
    return Markup("<h2>Last hour</h2><p>" + "<br>".join(charts) + "</p>")


def queue(dashboard: Dashboard, name: str) -> Markup | None:
    broker = dashboard.broker
    if name not in broker.get_declared_queues():
        return None
    topic = broker.topic_name(name)
    share_group = broker.share_group_of(name)
    owners = dashboard.partition_owners()
    rows = []
    for p in dashboard.lag(topic):
        owner, state = owners.get((topic, p.partition), ("", {}))
        rows.append(
            [
                p.partition,
                p.end,
                "-" if share_group else p.committed,
                "-" if share_group else p.lag,
                owner or "-",
                state.get("in_flight", "-"),
                "paused" if state.get("paused") else "",
                state.get("pause_reason") or "",
            ]
        )
    header = ["partition", "end", "committed", "lag", "owner", "in flight", "paused", "why"]
    dead_letters = link(f"dead-letters/{name}", "Dead letters")
    shared = ""
    if share_group is not None:
        # confluent-kafka's admin client has no call for a share group's offsets (KIP-932).
        shared = (
            f"<p>Consumed through the share group {escape(share_group)}, which commits no offset: "
            "its progress is not shown here; <code>kafka-share-groups.sh --describe --group "
            f"{escape(share_group)}</code> shows it.</p>"
        )
    return Markup(
        shared
        + table(header, rows)
        + trends(dashboard, name)
        + "<h2>Delayed jobs</h2>"
        + delayed(dashboard, name)
        + f"<p>{dead_letters}</p>"
    )


def delayed(dashboard: Dashboard, name: str) -> Markup:
    """Per delay tier, the jobs waiting (not committed) and when the next is due, from
    the status records of the workers that hold the delay topic's partitions."""
    topic = dashboard.broker.topology.topics(name).delay
    lags = {p.partition: p.lag for p in dashboard.lag(topic)}
    owners = dashboard.partition_owners()
    groups: dict[tuple[int, ...], list[int]] = {}
    for tier in range(TIERS):
        groups.setdefault(tuple(tier_partitions(tier, len(lags))), []).append(tier)
    now = time.time()
    rows = []
    for partitions, tiers in groups.items():
        upto = [TIER_BOUNDS[t] / 1000 if t < len(TIER_BOUNDS) else None for t in tiers]
        label = " / ".join(f"up to {b:g}s" if b is not None else "longer" for b in upto)
        due = [
            state["next_due"]
            for p in partitions
            if (state := owners.get((topic, p), ("", {}))[1]).get("next_due") is not None
        ]
        next_due = f"in {max(0.0, min(due) - now):.0f}s" if due else "-"
        rows.append(
            [label, ", ".join(map(str, partitions)), sum(lags.get(p, 0) for p in partitions), next_due]
        )
    return table(["delay tier", "partitions", "waiting (not committed)", "next due"], rows)


def workers(dashboard: Dashboard) -> Markup:
    now = time.time()
    rows = []
    for key, status in sorted(dashboard.workers().items()):
        age = now - float(status.get("at", 0))
        stale = age > STALE_INTERVALS * float(status.get("interval", 5))
        partitions = ", ".join(
            f"{q['queue']}/{p['partition']}"
            for q in status.get("queues", [])
            for p in q.get("partitions", [])
        )
        counters = status.get("counters", {})
        rows.append(
            [
                Markup(f"<span class='stale'>{escape(key)} (stale)</span>") if stale else key,
                status.get("threads"),
                partitions,
                status.get("running_count", 0),
                counters.get("done", 0),
                counters.get("failed", 0),
                f"{age:.0f}s ago",
            ]
        )
    header = ["process", "threads", "partitions", "running", "done", "failed", "last record"]
    reporting = set(dashboard.workers())
    try:
        members = dashboard.group_members()
    except KafkaBrokerError as e:
        dashboard.logger.warning("Could not describe the workers' group: %s", e)
        members = []
    silent = [
        [member.client_id, member.host, ", ".join(member.partitions) or "-"]
        for member in members
        if member.client_id.removeprefix(CLIENT_ID_PREFIX) not in reporting
    ]
    return Markup(
        table(header, rows)
        + "<h2>Group members without a status record</h2>"
        + "<p>Processes with another <code>client.id</code>, with <code>status_interval=None</code>, or "
        + "not started yet.</p>"
        + table(["client.id", "host", "partitions"], silent)
    )
