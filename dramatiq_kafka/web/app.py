"""The dashboard as a WSGI application: routes, what a request may do, the server.

Pages are GETs.  The one state-changing request, a dead letters' action, is a POST that
needs the dashboard's token (a shared secret set when it starts; none set, or
``read_only``, and actions are off), is refused when a browser says it comes from
another site, and is logged with who asked, what and how many.  Nothing of the broker's
settings is ever rendered or logged.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

from dramatiq.logging import get_logger

from ..broker import KafkaBroker
from ..errors import RequestRefused
from ..periodic import Periodic
from . import dead_letters, pages
from .html import Markup, page
from .readings import Dashboard

__all__ = ["TOKEN_ENV", "DashboardApp", "make_app", "serve"]

#: Where ``dramatiq-kafka web`` reads the token that allows actions.
TOKEN_ENV = "DRAMATIQ_KAFKA_WEB_TOKEN"
#: The largest form an action may post, in bytes.
MAX_FORM = 64 * 1024
#: How many actions' results are kept for the page a browser is sent to after its POST.
KEPT_RESULTS = 100

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

HEADERS = [
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'self'",
    ),
    # Not no-referrer: with it a browser posts a form with "Origin: null", refused below.
    ("Referrer-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
]


class DashboardApp:
    """The dashboard of ``broker`` as a WSGI application (call it with ``environ`` and
    ``start_response``); :meth:`close` stops its sampler and its Kafka client.

    Parameters:
      broker(KafkaBroker): The broker whose queues, group and prefix are shown.
      cache_seconds(float): How long a reading of Kafka is reused.
      refresh(int): Seconds between two reloads of a page without a form.
      token(str): The secret an action (replay, resolve) must carry; ``None``:
        actions are off.
      read_only(bool): Actions are off whatever the token.
      sample_every(float): Seconds between two samples of the queues' lag for
        the charts, taken on a thread of its own from the first request on;
        ``None``: only page views take them.
      origins(Iterable[str]): Origins (``https://ops.example.com``) whose forms may
        post actions besides the dashboard's own host: the public address a
        proxy serves it at, when the proxy sends another ``Host``.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        *,
        cache_seconds: float = 2.0,
        refresh: int = 5,
        token: str | None = None,
        read_only: bool = False,
        sample_every: float | None = 10.0,
        origins: Iterable[str] = (),
    ) -> None:
        self.broker = broker
        self.origins = frozenset(origin.rstrip("/") for origin in origins)
        self.dashboard = Dashboard(broker, cache_seconds=cache_seconds)
        self.refresh = refresh
        self.read_only = read_only
        self._token = token
        self.actions = bool(token) and not read_only
        self.logger = get_logger(__name__, "Dashboard")
        self._sampler = None
        if sample_every is not None:
            self._sampler = Periodic(
                "dramatiq-kafka-dashboard",
                sample_every,
                self.dashboard.sample,
                self.logger,
                "Could not sample the lag",
            )
        self._first_request = threading.Lock()
        self._action_locks: dict[str, threading.Lock] = {}
        # An action answers with a redirect to its result, so that reloading the
        # result's page does not post the action again.
        self._results: OrderedDict[str, tuple[str, Markup]] = OrderedDict()
        self._results_lock = threading.Lock()

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self.dashboard.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if self._sampler is not None and self._first_request.acquire(blocking=False):
            self._sampler.start()  # the lock stays held: the sampler starts once
        path = unquote(environ.get("PATH_INFO") or "/")
        root = (environ.get("SCRIPT_NAME") or "").rstrip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if method in ("GET", "HEAD"):
                found = self._get(path, parse_qs(environ.get("QUERY_STRING") or ""))
                if found is None:
                    raise RequestRefused("404 Not Found", "No such page.")
                title, body, refresh = found
            elif method == "POST":
                location = f"{root}/{self._post(path, environ)}"
                start_response(
                    "303 See Other", [("Location", location), ("Content-Type", "text/plain"), *HEADERS]
                )
                return [f"Done: see {location}\n".encode()]
            else:
                raise RequestRefused("405 Method Not Allowed", "Pages are read with GET; actions are POSTs.")
        except RequestRefused as e:
            start_response(e.status, [("Content-Type", "text/plain; charset=utf-8"), *HEADERS])
            return [f"{e}\n".encode()]
        except Exception as e:
            self.logger.warning("Could not render %s: %s", path, e)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), *HEADERS])
            return [b"Kafka did not answer; the page will be tried again.\n"]
        start_response(
            "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"), *HEADERS]
        )
        return [page(title, body, refresh=refresh, base=f"{root}/")]

    def _get(self, path: str, query: dict[str, list[str]]) -> tuple[str, Markup, int | None] | None:
        """A page's title, body and refresh interval (``None``: no such page)."""
        dashboard, refresh = self.dashboard, self.refresh
        if path == "/":
            return "Queues", pages.overview(dashboard), refresh
        if path == "/workers":
            return "Workers", pages.workers(dashboard), refresh
        if path.startswith("/queue/"):
            name = path[len("/queue/") :]
            body = pages.queue(dashboard, name)
            return None if body is None else (f"Queue {name}", body, refresh)
        if path == "/dead-letters":
            return "Dead letters", dead_letters.index(dashboard), refresh
        if path.startswith("/dead-letters/"):
            parts = path[len("/dead-letters/") :].split("/")
            queue = parts[0]
            if queue not in self.broker.get_declared_queues():
                return None
            if parts[1:] == ["act"]:
                raise RequestRefused(
                    "405 Method Not Allowed", "Actions are POSTs from the dead letters' page."
                )
            if len(parts) == 1:
                body = dead_letters.listing(dashboard, queue, query, actions=self.actions)
                return f"Dead letters of {queue}", body, None
            if len(parts) == 3 and parts[1] == "done":
                with self._results_lock:
                    kept = self._results.get(parts[2])
                if kept is None or kept[0] != queue:
                    raise RequestRefused(
                        "404 Not Found", "No such action, or too long ago: look at the dead letters again."
                    )
                return f"Dead letters of {queue}", kept[1], None
            if len(parts) == 3 and all(dead_letters.whole_number(part) for part in parts[1:]):
                partition, offset = int(parts[1]), int(parts[2])
                found = dead_letters.record_page(dashboard, queue, partition, offset, actions=self.actions)
                title = f"Dead letter {partition}/{offset} of {queue}"
                return None if found is None else (title, found, None)
        return None

    def _post(self, path: str, environ: dict[str, Any]) -> str:
        """Run an action; where its result is shown (relative to the dashboard's root)."""
        parts = path.split("/")
        if len(parts) != 4 or parts[1] != "dead-letters" or parts[3] != "act":
            raise RequestRefused("405 Method Not Allowed", "This page takes no action.")
        queue = parts[2]
        if not self.actions:
            why = (
                "read-only"
                if self.read_only
                else (
                    "made without a token (make_app(broker, token=...); "
                    f"for `dramatiq-kafka web`, set ${TOKEN_ENV})"
                )
            )
            raise RequestRefused("403 Forbidden", f"Actions are off: this dashboard is {why}.")
        check_same_site(environ, self.origins)
        form = read_form(environ)
        if not hmac.compare_digest((form.get("token") or [""])[0].encode(), str(self._token).encode()):
            raise RequestRefused(
                "403 Forbidden", "Wrong or missing token: actions need the dashboard's token."
            )
        if queue not in self.broker.get_declared_queues():
            raise RequestRefused("404 Not Found", f"No queue {queue!r} is declared on this broker.")
        action = dead_letters.action_of(form)
        who = environ.get("REMOTE_ADDR") or "?"
        topic = self.broker.dead_letter_topic(queue)
        self.logger.info("%s asks to %s %s of %r.", who, action.verb, action.what, topic)
        # One action at a time per dead-letter topic: two would read the same commit
        # of the DLQ group and the last to commit would undo the other's.
        with self._action_locks.setdefault(topic, threading.Lock()):
            try:
                result = dead_letters.act(self.dashboard, queue, action)
            except Exception as e:
                self.logger.warning("%s's %s of %s of %r failed: %s", who, action.verb, action.what, topic, e)
                raise RequestRefused(
                    "502 Bad Gateway",
                    f"The {action.verb} failed ({e}). What Kafka acknowledged before the failure is "
                    "committed; a dead letter sent but not committed is sent again by the next replay "
                    "(at least once). Look at the dead letters again before retrying.",
                ) from None
        self.logger.info(
            "%s's %s of %s of %r: %d done, %d done before, %d deferred, %d failed.",
            who,
            action.verb,
            action.what,
            topic,
            result.done,
            result.already,
            result.deferred,
            result.failed,
        )
        key = secrets.token_urlsafe(12)
        with self._results_lock:
            self._results[key] = (queue, dead_letters.result_page(queue, result))
            while len(self._results) > KEPT_RESULTS:
                self._results.popitem(last=False)
        return f"dead-letters/{queue}/done/{key}"


def make_app(broker: KafkaBroker, **options: Any) -> DashboardApp:
    """The dashboard of ``broker`` as a WSGI application (``options``: :class:`DashboardApp`'s)."""
    return DashboardApp(broker, **options)


def check_same_site(environ: dict[str, Any], origins: frozenset[str] = frozenset()) -> None:
    """Refuse a request that its browser says comes from another site than the
    dashboard's host or one of ``origins``.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` with a form's POST; a request
    with neither (a script, ``curl``) carries the token, which another site cannot
    know.
    """
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None and site not in ("same-origin", "none"):
        raise RequestRefused("403 Forbidden", f"Cross-site request refused (Sec-Fetch-Site: {site}).")
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None and origin not in origins:
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        if origin.split("://", 1)[-1] != host:
            raise RequestRefused(
                "403 Forbidden", "Cross-site request refused: its Origin is not this dashboard."
            )


def read_form(environ: dict[str, Any]) -> dict[str, list[str]]:
    kind = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise RequestRefused(
            "415 Unsupported Media Type", "An action is a form post (application/x-www-form-urlencoded)."
        )
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_FORM:
        raise RequestRefused("413 Content Too Large", f"An action's form is at most {MAX_FORM} bytes.")
    return parse_qs(environ["wsgi.input"].read(length).decode(errors="replace"))


def serve(broker: KafkaBroker, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve the dashboard until interrupted (options: :func:`make_app`'s)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    with make_server(host, port, make_app(broker, **options), server_class=Server) as server:
        get_logger(__name__).info("Dashboard on http://%s:%d/", host, port)
        server.serve_forever()
