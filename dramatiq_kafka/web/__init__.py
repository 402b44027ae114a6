"""A web dashboard of a broker's queues, workers and dead letters (WSGI and ASGI).

``dramatiq-kafka web --broker myapp.tasks`` serves it on 127.0.0.1:8080 with the standard
library's ``wsgiref``; :func:`make_app` returns the same application to mount in Django,
Flask or any WSGI server, :func:`make_asgi_app` in FastAPI, Starlette or any ASGI server.

Modules: ``readings.py`` (what it reads from Kafka, cached), ``pages.py`` (overview, queue,
workers), ``dead_letters.py`` (browse, show, replay, resolve), ``html.py`` (escaping and
layout), ``app.py`` (routes, tokens, cross-site checks, the server), ``asgi.py`` (the same
application over ASGI).  See ``docs/dashboard.md``.
"""

from __future__ import annotations

from .app import TOKEN_ENV, DashboardApp, make_app, serve
from .asgi import AsgiDashboard, make_asgi_app
from .readings import Dashboard

__all__ = ["TOKEN_ENV", "AsgiDashboard", "Dashboard", "DashboardApp", "make_app", "make_asgi_app", "serve"]
