"""The command line: every command's options, and which function runs it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..broker import BOOTSTRAP_SERVERS_ENV
from .connection import DEFAULT_PORT
from .dlq import cmd_dlq_replay, cmd_dlq_resolve, cmd_dlq_show
from .queues import cmd_lag, cmd_topics, cmd_topics_ensure
from .web import cmd_web


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and naming")
    group.add_argument(
        "--bootstrap-servers",
        "-b",
        metavar="HOST[:PORT]",
        help=f"Kafka (default: the config file's bootstrap.servers, the broker's, ${BOOTSTRAP_SERVERS_ENV}, "
        f"or localhost; port {DEFAULT_PORT} when not given)",
    )
    group.add_argument(
        "--config", "-c", metavar="FILE", help="librdkafka settings, a Java .properties file (key=value)"
    )
    group.add_argument(
        "--broker",
        metavar="MODULE[:ATTR]",
        help="take topic prefix, group, dead-letter topics and settings from this module's KafkaBroker",
    )
    group.add_argument("--prefix", help="topic prefix (default: the broker's, or none)")
    group.add_argument(
        "--group", "-g", help="the workers' consumer group (default: the broker's, or dramatiq)"
    )
    group.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)"
    )
    return common


def _filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dead letters")
    group.add_argument("queue", metavar="QUEUE", help="the queue whose dead letters to read")
    group.add_argument("--topic", help="the dead-letter topic (default: the broker's for QUEUE, or QUEUE.XQ)")
    group.add_argument("--dlq-group", help="the group recording replays (default: GROUP.dlq)")
    group.add_argument("--actor", action="append", metavar="NAME", help="only this actor (repeatable)")
    group.add_argument(
        "--error-type", action="append", metavar="TYPE", help="only this error_type (repeatable)"
    )
    group.add_argument("--partition", type=int, help="only this partition of the dead-letter topic")
    group.add_argument(
        "--offsets", metavar="START-END", help="only these offsets (inclusive; START- or -END)"
    )
    group.add_argument("--json", action="store_true", help=JSON_HELP)


JSON_HELP = "print JSON"


def _command(
    commands: Any, name: str, run: Callable[..., int], common: argparse.ArgumentParser, **texts: str
) -> argparse.ArgumentParser:
    """A command's parser, with the connection options, that runs ``run``."""
    parser: argparse.ArgumentParser = commands.add_parser(name, parents=[common], **texts)
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="dramatiq-kafka",
        description="Inspect and operate the Kafka topics of dramatiq-kafka queues.",
        epilog="Exit codes: 0 success, 1 failure, 2 bad usage, 3 Kafka not reachable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    topics = _command(
        commands,
        "topics",
        cmd_topics,
        common,
        help="list the queues' topics with partitions and end offsets",
        usage="%(prog)s [-h] [connection options] [--queue QUEUE] [--json]\n"
        "       %(prog)s ensure [-h] [connection options] MODULE[:ATTR]",
        description="List each queue's topic, delay topic (.DQ) and dead-letter topic, "
        "with partitions, messages kept and end offsets.",
    )
    topics.add_argument("--queue", "-q", action="append", help="only this queue (repeatable)")
    topics.add_argument("--json", action="store_true", help=JSON_HELP)
    topics_commands = topics.add_subparsers(
        dest="topics_command", title="subcommand", metavar="ensure", prog="dramatiq-kafka topics"
    )
    ensure = _command(
        topics_commands,
        "ensure",
        cmd_topics_ensure,
        common,
        help="create the missing topics of a broker module's queues",
        description="Create the missing topics (queue, .DQ, dead letters) of every queue a broker "
        "module declares, with its QueueConfig; existing topics are left as they are.",
    )
    ensure.add_argument("module", metavar="MODULE[:ATTR]", help="e.g. myapp.tasks")
    ensure.add_argument(
        "--add-partitions",
        action="store_true",
        help="grow existing topics with fewer partitions than QueueConfig asks (new records of a key "
        "may then go to another partition: order per key breaks across the change)",
    )
    ensure.add_argument("--json", action="store_true", help=JSON_HELP)

    lag = _command(
        commands,
        "lag",
        cmd_lag,
        common,
        help="committed vs end offset per queue and partition",
        description="For the workers' group: committed offset, end offset and lag of every partition "
        "of each queue (and its delay queue).",
    )
    lag.add_argument("queue", nargs="*", metavar="QUEUE", help="only these queues")
    lag.add_argument("--json", action="store_true", help=JSON_HELP)

    dlq = commands.add_parser("dlq", help="show, replay or resolve dead letters", description="Dead letters.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    dlq_show = _command(
        dlq_commands,
        "show",
        cmd_dlq_show,
        common,
        help="decoded dead letters: actor, args, error, origin",
        description="Print a queue's dead letters with actor, arguments, error and source headers.",
    )
    _filter_options(dlq_show)
    dlq_show.add_argument("--limit", type=int, help="print at most this many")
    dlq_show.add_argument("--pending", action="store_true", help="only those not replayed yet")
    dlq_show.add_argument("--traceback", action="store_true", help="include the tracebacks")
    dlq_replay = _command(
        dlq_commands,
        "replay",
        cmd_dlq_replay,
        common,
        help="send dead letters back to their queue",
        description="Send the matching dead letters not replayed yet back to their source topic (or "
        "--to another queue) with their original key, value and headers, then commit them in the DLQ "
        "group so that the same replay does not send them again.",
    )
    _filter_options(dlq_replay)
    dlq_replay.add_argument("--to", metavar="QUEUE", help="send to this queue instead of the source")
    dlq_replay.add_argument(
        "--dry-run", "-n", action="store_true", help="list what would be sent; send nothing"
    )
    dlq_replay.add_argument(
        "--send-omitted",
        action="store_true",
        help="also send dead letters whose value was left out (dead_letter_omitted), without it",
    )
    dlq_replay.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )

    dlq_resolve = _command(
        dlq_commands,
        "resolve",
        cmd_dlq_resolve,
        common,
        help="mark dead letters as handled without replaying them",
        description="Commit the matching dead letters in the DLQ group as handled, sending nothing: "
        "later replays leave them out, and `dlq show --pending` no longer lists them.",
    )
    _filter_options(dlq_resolve)
    dlq_resolve.add_argument(
        "--dry-run", "-n", action="store_true", help="list what would be resolved; commit nothing"
    )

    web = _command(
        commands,
        "web",
        cmd_web,
        common,
        help="a web dashboard of the queues, workers and dead letters",
        description="Serve the dashboard (queues, partitions, workers' status records, dead letters) "
        "over HTTP.",
    )
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)")
    web.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    web.add_argument("--read-only", action="store_true", help="offer no action, whatever the token")
    web.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file holding the token that replay and resolve need (default: $DRAMATIQ_KAFKA_WEB_TOKEN; "
        "none: actions are off)",
    )
    web.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="URL",
        help="an origin whose forms may post actions besides the dashboard's host, such as the "
        "https://... address a proxy serves it at (repeatable)",
    )
    return parser
