"""The dashboard as an ASGI application, for FastAPI, Starlette, Django's ASGI or uvicorn.

The pages and actions are :class:`~dramatiq_kafka.web.app.DashboardApp`'s: each request
is turned into the WSGI call it stands for and run on a worker thread (reading Kafka
blocks), so the event loop never waits for Kafka.  The ASGI lifespan's shutdown closes
the dashboard's sampler and Kafka client.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..broker import KafkaBroker
from .app import MAX_FORM, DashboardApp

__all__ = ["AsgiDashboard", "make_asgi_app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class AsgiDashboard:
    """The dashboard of a broker as an ASGI 3 application.

    Parameters:
      app(DashboardApp): The dashboard whose pages and actions are served.
    """

    def __init__(self, app: DashboardApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(f"The dashboard serves HTTP, not {scope['type']!r}.")
        body = await _body(receive)
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer.update(status=int(status.split(" ", 1)[0]), headers=headers)

        chunks = await asyncio.to_thread(self.app, environ_of(scope, body), start_response)
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer["headers"]
        ]
        await send({"type": "http.response.start", "status": answer["status"], "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.app.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(receive: Receive) -> bytes:
    """The request's body; one byte more than a form may have is enough to refuse it."""
    body = b""
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        body += event.get("body", b"")
        if not event.get("more_body") or len(body) > MAX_FORM:
            break
    return body[: MAX_FORM + 1]


def environ_of(scope: Scope, body: bytes) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP request (PEP 3333 from the ASGI spec's scope)."""
    root = scope.get("root_path", "")
    path = scope["path"]
    # Servers differ on whether "path" still holds the mount point: strip it once.
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    server = scope.get("server") or ("127.0.0.1", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root,
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "REMOTE_ADDR": client[0],
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").upper().replace("-", "_"), raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ[name] = value
        elif name != "CONTENT_LENGTH":
            key = f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def make_asgi_app(broker: KafkaBroker, **options: Any) -> AsgiDashboard:
    """The dashboard of ``broker`` as an ASGI application (``options``:
    :class:`~dramatiq_kafka.web.app.DashboardApp`'s)."""
    return AsgiDashboard(DashboardApp(broker, **options))
