"""A read-only web dashboard of a broker's queues and workers, as a WSGI application.

``dramatiq-kafka web --broker myapp.tasks`` serves it on 127.0.0.1:8080 with
the standard library's ``wsgiref``; :func:`make_app` returns the same
application to mount in Django, Flask or any WSGI server.  Pages:

* ``/``: every queue with its partitions, end offsets, lag, paused
  partitions, dead letters and delayed jobs;
* ``/queue/NAME``: per partition end, committed, lag, owner process, paused
  and why;
* ``/workers``: the processes' status records (``status.py``), stale ones marked.

It changes nothing in Kafka: it offers no action, so it needs no token.  Pages
refresh every ``refresh`` seconds; nothing of the broker's settings is rendered.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from dramatiq.logging import get_logger

from .admin import PartitionLag, TopicAdmin
from .broker import KafkaBroker
from .delays import TIER_BOUNDS, TIERS, tier_partitions
from .status import read_status

#: A status record older than this many of its intervals marks its process stale.
STALE_INTERVALS = 3

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Dashboard:
    """The dashboard's data, read from Kafka and cached for ``cache_seconds``.

    Parameters:
      broker(KafkaBroker): The broker whose queues, group and prefix are shown.
      cache_seconds(float): How long a reading of Kafka is reused.
      refresh(int): Seconds between two reloads of a page.
    """

    def __init__(self, broker: KafkaBroker, *, cache_seconds: float = 2.0, refresh: int = 5) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.cache_seconds = cache_seconds
        self.refresh = refresh
        self.admin = TopicAdmin(broker.client_config, broker.group_id, timeout=broker.request_timeout)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}

    def _cached(self, name: str, read: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
        value = read()
        with self._lock:
            self._cache[name] = (time.monotonic(), value)
        return value

    def topics(self) -> list[str]:
        """Every topic a page may show: the queues', their delay and dead-letter topics."""
        topics: list[str] = []
        for queue in sorted(self.broker.get_declared_queues()):
            topics += self.broker.topology.topics(queue)
        return topics

    def all_lags(self) -> dict[str, list[PartitionLag]]:
        """Every topic's lag, in one batched reading (the overview)."""
        return dict(self._cached("lags", lambda: self.admin.lags(self.topics())))

    def lag(self, topic: str) -> list[PartitionLag]:
        """One topic's lag (a queue's page)."""
        return list(self._cached(f"lag:{topic}", lambda: self.admin.lags([topic])[topic]))

    def workers(self) -> dict[str, dict[str, Any]]:
        return dict(
            self._cached("status", lambda: read_status(self.broker.client_config, self.broker.topic_prefix))
        )

    def partition_owners(self) -> dict[tuple[str, int], tuple[str, dict[str, Any]]]:
        """Per (topic, partition), the process that reports it and what it says."""
        owners = {}
        for key, status in self.workers().items():
            for queue in status.get("queues", []):
                for partition in queue.get("partitions", []):
                    owners[(queue["topic"], partition["partition"])] = (key, partition)
        return owners

    def queue_rows(self) -> list[dict[str, Any]]:
        owners = self.partition_owners()
        lags = self.all_lags()
        rows = []
        for queue in sorted(self.broker.get_declared_queues()):
            topic, delay_topic, dead_letter_topic = self.broker.topology.topics(queue)
            partitions = lags.get(topic) or []
            delayed = lags.get(delay_topic) or []
            dead = lags.get(dead_letter_topic) or []
            rows.append(
                {
                    "queue": queue,
                    "partitions": len(partitions),
                    "end": sum(p.end for p in partitions),
                    "lag": sum(p.lag for p in partitions),
                    "paused": sum(
                        1 for p in partitions if owners.get((topic, p.partition), ("", {}))[1].get("paused")
                    ),
                    "dead_letters": sum(p.end - p.low for p in dead),
                    "delayed": sum(p.lag for p in delayed),
                }
            )
        return rows


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if isinstance(cell, Markup) else html.escape(str(cell))}</td>" for cell in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class Markup(str):
    """Text already escaped."""


def _link(href: str, text: str) -> Markup:
    return Markup(f'<a href="{html.escape(href)}">{html.escape(text)}</a>')


STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
    ".stale{color:#a00}nav a{margin-right:1em}"
)


def make_app(broker: KafkaBroker, **options: Any) -> Callable[[dict[str, Any], StartResponse], list[bytes]]:
    """The dashboard as a WSGI application (see :class:`Dashboard` for ``options``)."""
    dashboard = Dashboard(broker, **options)

    def page(title: str, body: str) -> bytes:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta http-equiv='refresh' content='{dashboard.refresh}'><style>{STYLE}</style></head>"
            f"<body><nav><a href='/'>Overview</a><a href='/workers'>Workers</a></nav>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>"
        ).encode()

    def overview() -> bytes:
        rows = dashboard.queue_rows()
        return page(
            "Queues",
            _table(
                ["queue", "partitions", "end offsets", "lag", "paused", "dead letters", "delayed"],
                [
                    [
                        _link(f"/queue/{r['queue']}", r["queue"]),
                        r["partitions"],
                        r["end"],
                        r["lag"],
                        r["paused"],
                        r["dead_letters"],
                        r["delayed"],
                    ]
                    for r in rows
                ],
            ),
        )

    def queue(name: str) -> bytes | None:
        if name not in broker.get_declared_queues():
            return None
        topic = broker.topic_name(name)
        owners = dashboard.partition_owners()
        rows = []
        for p in dashboard.lag(topic):
            owner, state = owners.get((topic, p.partition), ("", {}))
            rows.append(
                [
                    p.partition,
                    p.end,
                    p.committed,
                    p.lag,
                    owner or "-",
                    state.get("in_flight", "-"),
                    "paused" if state.get("paused") else "",
                    state.get("pause_reason") or "",
                ]
            )
        header = ["partition", "end", "committed", "lag", "owner", "in flight", "paused", "why"]
        return page(f"Queue {name}", _table(header, rows) + "<h2>Delayed jobs</h2>" + delayed(name))

    def delayed(name: str) -> str:
        lags = {p.partition: p.lag for p in dashboard.lag(broker.topology.topics(name).delay)}
        groups: dict[tuple[int, ...], list[int]] = {}
        for tier in range(TIERS):
            groups.setdefault(tuple(tier_partitions(tier, len(lags))), []).append(tier)
        rows = []
        for partitions, tiers in groups.items():
            upto = [TIER_BOUNDS[t] / 1000 if t < len(TIER_BOUNDS) else None for t in tiers]
            label = " / ".join(f"up to {b:g}s" if b is not None else "longer" for b in upto)
            rows.append([label, ", ".join(map(str, partitions)), sum(lags.get(p, 0) for p in partitions)])
        return _table(["delay tier", "partitions", "waiting (not committed)"], rows)

    def workers() -> bytes:
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
                    Markup(f"<span class='stale'>{html.escape(key)} (stale)</span>") if stale else key,
                    status.get("threads"),
                    partitions,
                    status.get("running_count", 0),
                    counters.get("done", 0),
                    counters.get("failed", 0),
                    f"{age:.0f}s ago",
                ]
            )
        header = ["process", "threads", "partitions", "running", "done", "failed", "last record"]
        return page("Workers", _table(header, rows))

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        path = unquote(environ.get("PATH_INFO") or "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", "GET")])
            return [b"This dashboard is read-only.\n"]
        try:
            if path == "/":
                body: bytes | None = overview()
            elif path == "/workers":
                body = workers()
            elif path.startswith("/queue/"):
                body = queue(path[len("/queue/") :])
            else:
                body = None
        except Exception as e:
            dashboard.logger.warning("Could not render %s: %s", path, e)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"Kafka did not answer; the page will be tried again.\n"]
        if body is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"No such page.\n"]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("X-Frame-Options", "DENY")])
        return [body]

    return app


def serve(broker: KafkaBroker, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve the dashboard until interrupted."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    with make_server(host, port, make_app(broker, **options), server_class=Server) as server:
        get_logger(__name__).info("Dashboard on http://%s:%d/", host, port)
        server.serve_forever()
