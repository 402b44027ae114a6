"""A web dashboard of a broker's queues, workers and dead letters (a WSGI application).

``dramatiq-kafka web --broker myapp.tasks`` serves it on 127.0.0.1:8080 with the standard
library's ``wsgiref``; :func:`make_app` returns the same application to mount in Django,
Flask or any WSGI server.  Modules: ``readings.py`` (what it reads from Kafka, cached),
``pages.py`` (overview, queue, workers), ``dead_letters.py`` (browse, show, replay,
resolve), ``html.py`` (escaping and layout), ``app.py`` (routes, tokens, cross-site checks,
the server).  See ``docs/dashboard.md``.
"""

from __future__ import annotations

from .app import TOKEN_ENV, DashboardApp, make_app, serve
from .readings import Dashboard

__all__ = ["TOKEN_ENV", "Dashboard", "DashboardApp", "make_app", "serve"]
