"""The ``web`` command: serves the dashboard of ``dramatiq_kafka/web.py``."""

from __future__ import annotations

import argparse

from .connection import Context
from .exits import EXIT_OK, UsageError


def cmd_web(args: argparse.Namespace, ctx: Context) -> int:
    if ctx.broker is None:
        raise UsageError("web needs --broker MODULE[:ATTR]: the dashboard shows that broker's queues")
    from ..web import serve

    ctx.err.write(f"Dashboard on http://{args.host}:{args.port}/ (read-only; Ctrl-C stops it)\n")
    ctx.err.flush()
    serve(ctx.broker, args.host, args.port)
    return EXIT_OK
