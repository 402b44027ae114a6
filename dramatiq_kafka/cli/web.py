"""The ``web`` command: serves the dashboard of ``dramatiq_kafka/web/``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .connection import Context
from .exits import EXIT_OK, UsageError


def dashboard_token(args: argparse.Namespace) -> str | None:
    """The token that allows actions: ``--token-file``'s first line, else
    ``$DRAMATIQ_KAFKA_WEB_TOKEN`` (never a command-line value: ``ps`` shows those)."""
    from ..web import TOKEN_ENV

    if args.token_file:
        try:
            lines = Path(args.token_file).read_text().splitlines()
            token = lines[0].strip() if lines else ""
        except OSError as e:
            raise UsageError(f"--token-file {args.token_file}: cannot read it ({e.strerror})") from None
        if not token:
            raise UsageError(f"--token-file {args.token_file}: the file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def cmd_web(args: argparse.Namespace, ctx: Context) -> int:
    if ctx.broker is None:
        raise UsageError("web needs --broker MODULE[:ATTR]: the dashboard shows that broker's queues")
    from ..web import TOKEN_ENV, serve

    token = dashboard_token(args)
    if args.read_only:
        mode = "read-only"
    elif token:
        mode = "replay and resolve need the token"
    else:
        mode = f"read-only: no token (${TOKEN_ENV} or --token-file) allows actions"
    ctx.err.write(f"Dashboard on http://{args.host}:{args.port}/ ({mode}; Ctrl-C stops it)\n")
    ctx.err.flush()
    if not logging.getLogger().handlers:
        # The actions' audit lines (who replayed or resolved what) are INFO.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(ctx.broker, args.host, args.port, token=token, read_only=args.read_only, origins=args.origin)
    return EXIT_OK
