"""The ``dlq show`` and ``dlq replay`` commands.

Their options become :class:`~dramatiq_kafka.dead_letters.Filters` and a
:class:`~dramatiq_kafka.dead_letters.DeadLetterReader`; reading, showing
and replaying are the ``dead_letters`` package's, printing is here.
"""

from __future__ import annotations

import argparse
import difflib
import json
from datetime import UTC, datetime

from ..dead_letters import DeadLetterReader, DeadLetterRecord, Filters, dlq_group_for, replay, show
from .connection import Context, check_reachable
from .exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from .output import ProgressBar, print_json


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
    topic = args.topic or ctx.topology.dead_letter_topic(args.queue)
    check_reachable(ctx.bootstrap_servers, min(ctx.timeout, 5.0))
    return DeadLetterReader(
        ctx.config, topic, args.dlq_group or dlq_group_for(ctx.group), timeout=ctx.timeout
    )


def describe(record: DeadLetterRecord, replayed: bool, *, traceback: bool) -> str:
    shown = record.asdict(traceback=traceback)
    when = datetime.fromtimestamp(record.timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    status = "  (replayed or resolved)" if replayed else ""
    lines = [f"{record.topic} {record.partition}/{record.offset}  {when}{status}"]

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


def cmd_dlq_replay(args: argparse.Namespace, ctx: Context) -> int:
    err = ctx.err
    reader = dead_letter_reader(args, ctx)
    to_topic = ctx.topology.topic_name(args.to) if args.to else None
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
            f"{result.skipped} left out by the filters, {result.already} replayed or resolved before"
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


def cmd_dlq_resolve(args: argparse.Namespace, ctx: Context) -> int:
    reader = dead_letter_reader(args, ctx)
    try:
        result = replay(reader, ctx.config, filters_of(args), resolve=True, dry_run=args.dry_run)
    finally:
        reader.close()
    if result.interrupted:
        ctx.err.write(
            f"dramatiq-kafka: interrupted: the {result.resolved} dead letter(s) resolved so far are "
            "committed; the next run goes on from there.\n"
        )
        return EXIT_INTERRUPTED
    check_actor_names(args, ctx, result.actors_seen, reader.topic)
    if args.json:
        print_json(
            ctx.out,
            {
                "topic": reader.topic,
                "dlq_group": reader.group_id,
                "examined": result.examined,
                "dry_run": args.dry_run,
                "resolved": result.resolved,
                "skipped": result.skipped,
                "already_replayed": result.already,
                "deferred": result.deferred,
            },
        )
    else:
        for record, _ in result.records if args.dry_run else ():
            ctx.out.write(
                f"would resolve {record.partition}/{record.offset} {record.actor_name or '?'}"
                f" ({record.error_type or 'no error'})\n"
            )
        ctx.out.write(
            f"{'Would resolve' if args.dry_run else 'Resolved'} {result.resolved} dead letter(s) of "
            f"{reader.topic!r} without replaying them; "
            f"{result.skipped} left out by the filters, {result.already} replayed or resolved before"
            + (f", {result.deferred} deferred to a later run" if result.deferred else "")
            + (". Nothing was committed.\n" if args.dry_run else ".\n")
        )
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
