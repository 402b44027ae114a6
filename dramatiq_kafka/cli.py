"""The ``dramatiq-kafka`` command: topics, lag, and dead letters.

Exit codes: 0 success; 1 the command failed (a topic missing, a replay
not acknowledged); 2 bad usage (options, config file, broker module);
3 Kafka is not reachable; 141 stdout was closed (``| head``), quietly.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import dramatiq
from confluent_kafka import KafkaError, KafkaException
from dramatiq.common import dq_name

from . import __version__
from .admin import TopicAdmin
from .broker import BOOTSTRAP_SERVERS_ENV, KafkaBroker
from .client_log import redact
from .dead_letters import DeadLetterReader, DeadLetterRecord, Filters, dlq_group_for, replay, show
from .errors import ConfigurationError, KafkaBrokerError, KafkaConnectionError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: A closed pipe on stdout: the shell's code for a process ended by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13
#: Ctrl-C: the shell's code for SIGINT.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad options, an unreadable config file, a broker module that does not load."""


# -- connection and naming ---------------------------------------------------------------------------


#: The port of a ``--bootstrap-servers`` host given without one (Kafka's own default).
DEFAULT_PORT = 9092

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Java's ``Properties.load`` lines: a line ending in an odd number of
    backslashes goes on with the next one, whose leading whitespace is
    dropped; comment and blank lines are skipped.  Yields the first line's
    number and the joined text."""
    pending: str | None = None
    first = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(" \t\f")
        if pending is None:
            if not line or line.startswith(("#", "!")):
                continue
            first = number
        trailing = len(line) - len(line.rstrip("\\"))
        continued = trailing % 2 == 1
        piece = line[:-1] if continued else line
        pending = piece if pending is None else pending + piece
        if not continued:
            yield first, pending
            pending = None
    if pending is not None:
        yield first, pending


def _unescape(text: str, where: str) -> str:
    out = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        code = text[i + 1]
        if code == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise UsageError(f"{where}: malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_ESCAPES.get(code, code))
            i += 2
    return "".join(out)


def parse_properties(text: str, source: str = "config") -> dict[str, str]:
    """Settings in Java's ``.properties`` syntax, as ``Properties.load`` reads them.

    ``key=value``, ``key: value`` and ``key value`` (the key ends at the first
    unescaped ``=``, ``:`` or whitespace); ``#`` and ``!`` comments; a
    trailing backslash continues a line; ``\\t``, ``\\n``, ``\\uXXXX`` escapes.

    Raises:
      UsageError: Naming the file, the line and the key, never a value
        (it may be a password).
    """
    properties = {}
    for number, line in _logical_lines(text):
        end = 0
        while end < len(line) and line[end] not in "=: \t\f":
            end += 2 if line[end] == "\\" else 1
        raw_key = line[:end]
        rest = line[end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        key = _unescape(raw_key, f"{source}:{number}").strip()
        if not key:
            raise UsageError(f"{source}:{number}: a setting without a key")
        properties[key] = _unescape(rest, f"{source}:{number}: the value of {key!r}")
    return properties


def read_properties(path: str) -> dict[str, str]:
    """A librdkafka properties file, in Java's ``.properties`` syntax (see
    :func:`parse_properties`).

    Raises:
      UsageError: When the file cannot be read or a line cannot be parsed;
        the message never shows a value.
    """
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"Cannot read the config file {path!r}: {e.strerror}") from None
    return parse_properties(text, path)


def with_default_ports(servers: str) -> str:
    """``host`` becomes ``host:9092`` in a ``host[:port],...`` list (also ``[::1]``)."""
    result = []
    for server in servers.split(","):
        server = server.strip()
        address = server.rsplit("://", 1)[-1]
        bracketed = address.startswith("[")
        has_port = address.rsplit("]", 1)[-1].startswith(":") if bracketed else address.count(":") == 1
        result.append(server if has_port or not server else f"{server}:{DEFAULT_PORT}")
    return ",".join(result)


def load_broker(spec: str) -> KafkaBroker:
    """The ``KafkaBroker`` of a module: ``myapp.tasks`` or ``myapp.tasks:attr``.

    Without ``:attr``, the module's ``broker`` attribute, else the broker
    the module set with ``dramatiq.set_broker``.

    Raises:
      UsageError: When the module does not import or holds no KafkaBroker.
    """
    module_name, _, attribute = spec.partition(":")
    # As the `dramatiq` command does: the application is found from here.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(
            f"Cannot import the broker module {module_name!r}: {type(e).__name__}: {e}"
        ) from None
    candidate = getattr(module, attribute or "broker", None)
    if candidate is None and not attribute:
        candidate = dramatiq.broker.global_broker
    if not isinstance(candidate, KafkaBroker):
        where = f"{module_name}:{attribute}" if attribute else module_name
        found = "nothing" if candidate is None else type(candidate).__name__
        raise UsageError(f"{where!r} holds no KafkaBroker (found {found}).")
    return candidate


@dataclass
class Context:
    """What every command needs: the clients' settings and the topic names."""

    config: dict[str, Any]
    prefix: str
    group: str
    timeout: float
    broker: KafkaBroker | None
    out: TextIO
    #: Warnings go here, never into the output a script reads.
    err: TextIO = sys.stderr
    #: Whether ``--group`` named the group (not the broker's or the default).
    group_given: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return str(self.config["bootstrap.servers"])

    def topic(self, queue: str) -> str:
        return f"{self.prefix}{queue}"

    def dead_letter_topic(self, queue: str) -> str:
        if self.broker is not None:
            return self.broker.dead_letter_topic(queue)
        return f"{self.prefix}{queue}.XQ"

    def admin(self) -> TopicAdmin:
        check_reachable(self.bootstrap_servers, min(self.timeout, 5.0))
        return TopicAdmin(self.config, self.group, timeout=self.timeout)

    def queues(self, topics: set[str], wanted: Sequence[str] = ()) -> list[str]:
        """The queues to report: those asked for, the broker's, or those the
        topic names reveal (``{prefix}q``, ``q.DQ``, ``q.XQ``)."""
        if wanted:
            return list(wanted)
        if self.broker is not None:
            return sorted(self.broker.get_declared_queues())
        queues = set()
        for topic in topics:
            if not topic.startswith(self.prefix) or topic.startswith("__"):
                continue
            name = topic[len(self.prefix) :]
            for suffix in (".DQ", ".XQ"):
                name = name.removesuffix(suffix)
            queues.add(name)
        return sorted(queues)


def check_reachable(bootstrap_servers: str, timeout: float) -> None:
    """Fail fast when no bootstrap server accepts a TCP connection:
    librdkafka would wait out the whole request timeout.

    Raises:
      KafkaConnectionError: Naming the servers and the socket error.
    """
    errors = []
    for server in bootstrap_servers.split(","):
        address = server.strip().rsplit("://", 1)[-1]
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout):
                return
        except (OSError, ValueError) as e:
            errors.append(f"{server.strip()}: {e}")
    raise KafkaConnectionError(f"Kafka is not reachable at {bootstrap_servers!r} ({'; '.join(errors)}).")


def make_context(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> Context:
    spec = getattr(args, "module", None) or args.broker
    broker = load_broker(spec) if spec else None
    config: dict[str, Any] = dict(broker.client_config) if broker is not None else {}
    if args.config:
        config.update(read_properties(args.config))
    servers = (
        args.bootstrap_servers or config.get("bootstrap.servers") or os.environ.get(BOOTSTRAP_SERVERS_ENV)
    )
    config["bootstrap.servers"] = with_default_ports(servers or "localhost")
    # librdkafka's own warnings (a coordinator still loading...) are noise here.
    config.setdefault("log_level", 3)
    prefix = args.prefix if args.prefix is not None else (broker.topic_prefix if broker else "")
    group = args.group or (broker.group_id if broker else "dramatiq")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    return Context(
        config, prefix, group, args.timeout, broker, out, err or sys.stderr, group_given=bool(args.group)
    )


# -- output ------------------------------------------------------------------------------------------


def print_table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def print_json(out: TextIO, data: object) -> None:
    out.write(json.dumps(data, indent=2) + "\n")


class ProgressBar:
    """A one-line progress bar, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str, *, enabled: bool, width: int = 30) -> None:
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self.width = width
        self._drawn_at = 0.0
        self._drawn = False

    def update(self, done: int, total: int, replayed: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        percent = 100 * done // total if total else 100
        line = f"\r{self.label} [{bar}] {percent:3d}% {done}/{total} examined, {replayed} replayed"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# -- commands ----------------------------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace, ctx: Context) -> int:
    admin = ctx.admin()
    try:
        topics = admin.topic_names()
        rows: list[tuple[object, ...]] = []
        data: list[dict[str, Any]] = []
        for queue in ctx.queues(topics, args.queue):
            for kind, topic in (
                ("queue", ctx.topic(queue)),
                ("delay", ctx.topic(dq_name(queue))),
                ("dead letters", ctx.dead_letter_topic(queue)),
            ):
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
    admin = ctx.admin()
    # The broker creates its topics itself, with its QueueConfig; only
    # its connection comes from the command line.
    broker.admin = admin
    # Look again, even at queues this process already used (a second run in one process).
    broker._topics_ensured.clear()
    create_topics, broker.create_topics = broker.create_topics, True
    try:
        before = admin.topic_names()
        queues = sorted(broker.get_declared_queues())
        for queue in queues:
            broker.ensure_topics(queue)
            broker.ensure_topics(dq_name(queue))
        wanted = {
            topic
            for queue in queues
            for topic in (
                broker.topic_name(queue),
                broker.topic_name(dq_name(queue)),
                broker.dead_letter_topic(queue),
            )
        }
        # A created topic takes a moment to show in the metadata.
        deadline = time.monotonic() + ctx.timeout
        while not wanted <= (after := admin.topic_names()) and time.monotonic() < deadline:
            time.sleep(0.2)
        short = dict(admin.short_topics)
        if args.add_partitions:
            for topic, (_, total) in short.items():
                admin.add_partitions(topic, total)
    finally:
        broker.create_topics = create_topics
        admin.close()
    rows = []
    for queue in queues:
        for topic in dict.fromkeys(
            (broker.topic_name(queue), broker.topic_name(dq_name(queue)), broker.dead_letter_topic(queue))
        ):
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
        for queue in ctx.queues(topics, args.queue):
            for name in (queue, dq_name(queue)):
                topic = ctx.topic(name)
                if topic not in topics:
                    if name == queue and args.queue:
                        raise KafkaBrokerError(f"The topic {topic!r} of queue {queue!r} does not exist.")
                    continue
                for lag in admin.lag(topic):
                    data.append(
                        {
                            "queue": name,
                            "topic": topic,
                            "partition": lag.partition,
                            "committed": lag.committed,
                            "low": lag.low,
                            "end": lag.end,
                            "lag": lag.lag,
                        }
                    )
    finally:
        admin.close()
    if ctx.group_given and data and all(d["committed"] < 0 for d in data):
        # A typo in --group shows every record as lag: say so rather than alarm.
        ctx.err.write(
            f"dramatiq-kafka: warning: group {ctx.group!r} has no committed offset on these topics "
            "(a typo in --group? every record counts as lag).\n"
        )
    if args.json:
        print_json(ctx.out, {"group": ctx.group, "partitions": data, "total": sum(d["lag"] for d in data)})
        return EXIT_OK
    ctx.out.write(f"Group {ctx.group!r} at {ctx.bootstrap_servers!r}\n")
    rows: list[Sequence[object]] = []
    for queue in dict.fromkeys(d["queue"] for d in data):
        own = [d for d in data if d["queue"] == queue]
        for d in own:
            committed = d["committed"] if d["committed"] >= 0 else "-"
            rows.append((queue, d["partition"], committed, d["end"], d["lag"]))
        rows.append((queue, "total", "", "", sum(d["lag"] for d in own)))
    if rows:
        print_table(ctx.out, ("QUEUE", "PARTITION", "COMMITTED", "END", "LAG"), rows)
    else:
        ctx.out.write("No queue topics.\n")
    return EXIT_OK


def parse_offsets(text: str | None) -> tuple[int | None, int | None]:
    """``10-20``, ``10-``, ``-20`` or ``15`` (inclusive)."""
    if text is None:
        return None, None
    start, sep, end = text.partition("-")
    try:
        first = int(start) if start else None
        last = (int(end) if end else None) if sep else first
    except ValueError:
        raise UsageError(f"--offsets {text!r}: expected START-END, START-, -END or OFFSET") from None
    if first is not None and last is not None and first > last:
        raise UsageError(f"--offsets {text!r}: the start is after the end")
    return first, last


def filters_of(args: argparse.Namespace) -> Filters:
    start, end = parse_offsets(args.offsets)
    return Filters(
        actors=args.actor or (),
        error_types=args.error_type or (),
        partition=args.partition,
        start_offset=start,
        end_offset=end,
    )


def dead_letter_reader(args: argparse.Namespace, ctx: Context) -> DeadLetterReader:
    topic = args.topic or ctx.dead_letter_topic(args.queue)
    check_reachable(ctx.bootstrap_servers, min(ctx.timeout, 5.0))
    return DeadLetterReader(
        ctx.config, topic, args.dlq_group or dlq_group_for(ctx.group), timeout=ctx.timeout
    )


def describe(record: DeadLetterRecord, replayed: bool, *, traceback: bool) -> str:
    shown = record.asdict(traceback=traceback)
    when = datetime.fromtimestamp(record.timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"{record.topic} {record.partition}/{record.offset}  {when}{'  (replayed)' if replayed else ''}"]

    def line(name: str, value: object) -> None:
        if value not in (None, "", {}, []):
            lines.append(f"  {name:<10} {value}")

    line("actor", shown["actor"])
    line("message", shown["message_id"])
    if shown["args"] is not None:
        line("args", json.dumps(shown["args"]))
    line("kwargs", json.dumps(shown["kwargs"]) if shown["kwargs"] else None)
    line("key", shown["key"])
    line("value", shown.get("value"))
    error = ": ".join(str(part) for part in (shown["error_type"], shown["error_message"]) if part)
    line("error", error)
    if shown["source_topic"]:
        attempts = shown["source_attempts"]
        line(
            "source",
            f"{shown['source_topic']} {shown['source_partition']}/{shown['source_offset']}"
            f" (group {shown['source_consumer_group']}, {attempts} attempt{'s' if attempts != 1 else ''})",
        )
    if traceback and shown.get("error_traceback"):
        lines.append("  traceback:")
        lines.extend("    " + row for row in str(shown["error_traceback"]).rstrip().splitlines())
    return "\n".join(lines)


def cmd_dlq_show(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be 1 or more")
    reader = dead_letter_reader(args, ctx)
    try:
        found = list(show(reader, filters_of(args), limit=args.limit, pending_only=args.pending))
    finally:
        reader.close()
    if ctx.broker is not None:
        # Without the broker, a name no dead letter shown has may still be in the topic.
        check_actor_names(args, ctx, {r.actor_name for r, _ in found if r.actor_name}, reader.topic)
    if args.json:
        print_json(
            ctx.out,
            [{**record.asdict(traceback=args.traceback), "replayed": done} for record, done in found],
        )
        return EXIT_OK
    for record, done in found:
        ctx.out.write(describe(record, done, traceback=args.traceback) + "\n\n")
    ctx.out.write(f"{len(found)} dead letter(s) in {reader.topic!r}.\n")
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace, ctx: Context, err: TextIO) -> int:
    reader = dead_letter_reader(args, ctx)
    to_topic = ctx.topic(args.to) if args.to else None
    enabled = args.progress if args.progress is not None else err.isatty()
    bar = ProgressBar(err, f"Replaying {reader.topic}", enabled=enabled and not args.json)
    try:
        result = replay(
            reader,
            ctx.config,
            filters_of(args),
            to_topic=to_topic,
            dry_run=args.dry_run,
            progress=bar.update,
            timeout=max(ctx.timeout, 30.0),
            send_omitted=args.send_omitted,
        )
    finally:
        bar.close()
        reader.close()
    check_actor_names(args, ctx, result.actors_seen, reader.topic)
    summary = {
        "topic": reader.topic,
        "dlq_group": reader.group_id,
        "dry_run": args.dry_run,
        "examined": result.examined,
        "replayed": result.replayed,
        "skipped": result.skipped,
        "already_replayed": result.already,
        "deferred": result.deferred,
        "failed": result.failed,
        "errors": result.errors,
        "interrupted": result.interrupted,
        "unconfirmed": result.unconfirmed,
    }
    if args.json:
        if args.dry_run:
            summary["records"] = [
                {**record.asdict(), "to": destination} for record, destination in result.records
            ]
        print_json(ctx.out, summary)
    else:
        for record, destination in result.records:
            ctx.out.write(
                f"would replay {record.partition}/{record.offset} {record.actor_name or '?'}"
                f" ({record.error_type or 'no error'}) to {destination!r}\n"
            )
        verb = "Would replay" if args.dry_run else "Replayed"
        where = f"to {to_topic!r}" if to_topic else "to their source topics"
        ctx.out.write(
            f"{verb} {result.replayed} dead letter(s) of {reader.topic!r} {where}; "
            f"{result.skipped} left out by the filters, {result.already} replayed before"
            + (f", {result.deferred} deferred to a later run" if result.deferred else "")
            + (f", {result.failed} failed" if result.failed else "")
            + (". Nothing was sent or committed.\n" if args.dry_run else ".\n")
        )
        for error in result.errors:
            err.write(f"error: {error}\n")
    if result.interrupted:
        err.write(
            f"dramatiq-kafka: interrupted after {result.examined} dead letter(s) examined: the "
            f"{result.replayed} acknowledged are committed and will not be sent again"
            + (
                f"; {result.unconfirmed} sent but not acknowledged will be sent again by the next run"
                if result.unconfirmed
                else ""
            )
            + "; the next run goes on from there.\n"
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.failed else EXIT_OK


def cmd_web(args: argparse.Namespace, ctx: Context) -> int:
    if ctx.broker is None:
        raise UsageError("web needs --broker MODULE[:ATTR]: the dashboard shows that broker's queues")
    from .web import serve

    ctx.err.write(f"Dashboard on http://{args.host}:{args.port}/ (read-only; Ctrl-C stops it)\n")
    ctx.err.flush()
    serve(ctx.broker, args.host, args.port)
    return EXIT_OK


def check_actor_names(args: argparse.Namespace, ctx: Context, seen: set[str], topic: str) -> None:
    """Fail on an ``--actor`` that names no known actor, with a suggestion.

    Known: the broker's actors (``--broker``) and those of the dead letters
    examined.

    Raises:
      UsageError: Naming the unknown actor and the closest known one.
    """
    known = set(seen) | (set(ctx.broker.actors) if ctx.broker is not None else set())
    for name in args.actor or ():
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = "the broker's actors or " if ctx.broker is not None else ""
        raise UsageError(f"unknown actor {name!r} (not in {where}the dead letters of {topic!r}){hint}")


# -- parsing -----------------------------------------------------------------------------------------


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
    group.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="dramatiq-kafka",
        description="Inspect and operate the Kafka topics of dramatiq-kafka queues.",
        epilog="Exit codes: 0 success, 1 failure, 2 bad usage, 3 Kafka not reachable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    topics = commands.add_parser(
        "topics",
        parents=[common],
        help="list the queues' topics with partitions and end offsets",
        usage="%(prog)s [-h] [connection options] [--queue QUEUE] [--json]\n"
        "       %(prog)s ensure [-h] [connection options] MODULE[:ATTR]",
        description="List each queue's topic, delay topic (.DQ) and dead-letter topic, "
        "with partitions, messages kept and end offsets.",
    )
    topics.add_argument("--queue", "-q", action="append", help="only this queue (repeatable)")
    topics.add_argument("--json", action="store_true", help="print JSON")
    topics.set_defaults(run=cmd_topics)
    topics_commands = topics.add_subparsers(
        dest="topics_command", title="subcommand", metavar="ensure", prog="dramatiq-kafka topics"
    )
    ensure = topics_commands.add_parser(
        "ensure",
        parents=[common],
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
    ensure.add_argument("--json", action="store_true", help="print JSON")
    ensure.set_defaults(run=cmd_topics_ensure)

    lag = commands.add_parser(
        "lag",
        parents=[common],
        help="committed vs end offset per queue and partition",
        description="For the workers' group: committed offset, end offset and lag of every partition "
        "of each queue (and its delay queue).",
    )
    lag.add_argument("queue", nargs="*", metavar="QUEUE", help="only these queues")
    lag.add_argument("--json", action="store_true", help="print JSON")
    lag.set_defaults(run=cmd_lag)

    dlq = commands.add_parser("dlq", help="show or replay dead letters", description="Dead letters.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    dlq_show = dlq_commands.add_parser(
        "show",
        parents=[common],
        help="decoded dead letters: actor, args, error, origin",
        description="Print a queue's dead letters with actor, arguments, error and source headers.",
    )
    _filter_options(dlq_show)
    dlq_show.add_argument("--limit", type=int, help="print at most this many")
    dlq_show.add_argument("--pending", action="store_true", help="only those not replayed yet")
    dlq_show.add_argument("--traceback", action="store_true", help="include the tracebacks")
    dlq_show.set_defaults(run=cmd_dlq_show)
    dlq_replay = dlq_commands.add_parser(
        "replay",
        parents=[common],
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
    dlq_replay.set_defaults(run=cmd_dlq_replay)

    web = commands.add_parser(
        "web",
        parents=[common],
        help="a read-only web dashboard of the queues and workers",
        description="Serve the dashboard (queues, partitions, workers' status records) over HTTP.",
    )
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)")
    web.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    web.set_defaults(run=cmd_web)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command; return its exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        ctx = make_context(args, out, err)
        if args.run is cmd_dlq_replay:
            code = int(cmd_dlq_replay(args, ctx, err))
        else:
            code = int(args.run(args, ctx))
        # Here, not at exit: a closed pipe must come out as BrokenPipeError below.
        out.flush()
        return code
    except UsageError as e:
        err.write(f"dramatiq-kafka: error: {e}\n")
        return EXIT_USAGE
    except KafkaConnectionError as e:
        err.write(f"dramatiq-kafka: error: {e}\n")
        return EXIT_UNREACHABLE
    except ConfigurationError as e:
        # A setting librdkafka refuses (named without its value): bad usage.
        err.write(f"dramatiq-kafka: error: {e}\n")
        return EXIT_USAGE
    except KafkaBrokerError as e:
        err.write(f"dramatiq-kafka: error: {e}\n")
        return EXIT_FAILED
    except KafkaException as e:
        error = e.args[0] if e.args else e
        text = getattr(error, "str", lambda: str(error))()
        err.write(f"dramatiq-kafka: error: {redact(text)}\n")
        invalid = isinstance(error, KafkaError) and error.code() == KafkaError._INVALID_ARG
        return EXIT_USAGE if invalid else EXIT_FAILED
    except KeyboardInterrupt:
        err.write("dramatiq-kafka: interrupted\n")
        return 130
    except BrokenPipeError:
        # `dramatiq-kafka lag | head`: the reader has what it wanted.  Later
        # writes (the interpreter's final flush) go nowhere instead of raising.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
