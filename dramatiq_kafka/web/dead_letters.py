"""The dashboard's dead letters: browse and filter them, show one, replay or resolve them.

Reading, replaying and resolving go through ``dramatiq_kafka.dead_letters``, the code of
``dramatiq-kafka dlq``: a replay from the page sends the records to their source topic and
commits them in the DLQ group, as the command does.  Whether an action may run (the token,
cross-site requests) is decided by ``app.py`` before anything here is called.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..dead_letters import DeadLetterReader, Filters, dlq_group_for, replay, show
from ..dead_letters.replay import ReplayResult
from ..errors import RequestRefused
from .html import Markup, escape, form, hidden, link, table
from .readings import Dashboard

__all__ = ["act", "index", "listing", "record_page", "result_page"]

#: Dead letters a listing shows unless its ``limit`` says otherwise, and the most it may.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The actions a page may ask for.
VERBS = ("replay", "resolve")

Query = Mapping[str, Sequence[str]]


def bad_request(text: str) -> RequestRefused:
    return RequestRefused("400 Bad Request", text)


@contextmanager
def _reader(dashboard: Dashboard, queue: str) -> Iterator[DeadLetterReader]:
    broker = dashboard.broker
    reader = DeadLetterReader(
        broker.client_config,
        broker.dead_letter_topic(queue),
        dlq_group_for(broker.group_id),
        timeout=broker.request_timeout,
    )
    try:
        yield reader
    finally:
        reader.close()


def _number(query: Query, name: str) -> int | None:
    text = (query.get(name) or [""])[0].strip()
    if not text:
        return None
    if not text.isdigit():
        raise bad_request(f"{name}={text!r}: must be a whole number >= 0 (or left empty)")
    return int(text)


def filters_of(query: Query) -> Filters:
    """The filters a listing (or an action on all that match) was given."""
    return Filters(
        actors=[a for a in query.get("actor", []) if a],
        error_types=[e for e in query.get("error_type", []) if e],
        partition=_number(query, "partition"),
        start_offset=_number(query, "start"),
        end_offset=_number(query, "end"),
    )


def _filter_fields(query: Query) -> dict[str, str]:
    return {
        name: (query.get(name) or [""])[0] for name in ("actor", "error_type", "partition", "start", "end")
    }


def index(dashboard: Dashboard) -> Markup:
    rows = [
        [link(f"/dead-letters/{r['queue']}", r["queue"]), r["dead_letters"]] for r in dashboard.queue_rows()
    ]
    return table(["queue", "dead letters kept"], rows)


def _when(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _token_field() -> Markup:
    return Markup('<label>token <input type="password" name="token" autocomplete="off" required></label> ')


def listing(dashboard: Dashboard, queue: str, query: Query, *, actions: bool) -> Markup:
    """The dead letters of ``queue`` that match the query's filters, newest reads last."""
    filters = filters_of(query)
    limit = _number(query, "limit") or DEFAULT_LIMIT
    if limit > MAX_LIMIT:
        raise bad_request(f"limit={limit}: at most {MAX_LIMIT}")
    pending = (query.get("pending") or [""])[0] == "1"
    with _reader(dashboard, queue) as reader:
        found = list(show(reader, filters, limit=limit, pending_only=pending))
        topic = reader.topic
    fields = _filter_fields(query)
    inputs = "".join(
        f'<label>{name} <input name="{name}" value="{escape(value)}" size="12"></label> '
        for name, value in fields.items()
    )
    checked = " checked" if pending else ""
    filter_form = form(
        f"/dead-letters/{queue}",
        Markup(
            inputs
            + f'<label><input type="checkbox" name="pending" value="1"{checked}> not replayed yet</label> '
            f'<label>limit <input name="limit" value="{limit}" size="5"></label> <button>filter</button>'
        ),
        method="get",
    )
    rows = []
    for dead, replayed in found:
        shown = dead.asdict()
        pick = f"{dead.partition}/{dead.offset}"
        rows.append(
            [
                Markup(f'<input type="checkbox" name="pick" value="{pick}" form="picked">')
                if actions
                else "",
                link(f"/dead-letters/{queue}/{pick}", pick),
                shown["actor"] or "?",
                shown["error_type"] or "",
                Markup(f"<span class='text'>{escape((shown['error_message'] or '')[:200])}</span>"),
                f"{shown['source_topic'] or '?'}/{shown['source_partition']}@{shown['source_offset']}",
                _when(dead.timestamp),
                "replayed" if replayed else "",
            ]
        )
    header = ["", "partition/offset", "actor", "error type", "error", "from", "dead-lettered", "status"]
    body = f"<p>Topic {escape(topic)}: {len(found)} shown (at most {limit}).</p>{filter_form}"
    body += table(header, rows)
    if actions:
        picked = form(
            f"/dead-letters/{queue}/act",
            Markup(
                _token_field() + '<button name="verb" value="replay">replay the selected</button> '
                '<button name="verb" value="resolve">resolve the selected</button>'
            ),
        ).replace("<form ", '<form id="picked" ', 1)
        matching = form(
            f"/dead-letters/{queue}/act",
            Markup(
                hidden({**fields, "all": "1"})
                + _token_field()
                + '<button name="verb" value="replay">replay all that match the filters</button> '
                '<button name="verb" value="resolve">resolve all that match</button>'
            ),
        )
        body += picked + matching
    return Markup(body)


def record_page(
    dashboard: Dashboard, queue: str, partition: int, offset: int, *, actions: bool
) -> Markup | None:
    """One dead letter in full (``None`` when there is none there)."""
    only = Filters(partition=partition, start_offset=offset, end_offset=offset)
    with _reader(dashboard, queue) as reader:
        found = list(show(reader, only, limit=1))
    if not found:
        return None
    dead, replayed = found[0]
    shown = dead.asdict(traceback=True)
    rows = [[name, Markup(f"<pre>{escape(_text(value))}</pre>")] for name, value in shown.items()]
    rows.append(["dead-lettered", _when(dead.timestamp)])
    rows.append(["status", "replayed or resolved" if replayed else "not replayed yet"])
    rows.append(
        [
            "headers",
            Markup(
                f"<pre>{escape(chr(10).join(f'{k}: {_text(v)}' for k, v in dead.original_headers))}</pre>"
            ),
        ]
    )
    body: str = table(["", ""], rows)
    if actions and not replayed:
        body += form(
            f"/dead-letters/{queue}/act",
            Markup(
                hidden({"pick": f"{partition}/{offset}"})
                + _token_field()
                + '<button name="verb" value="replay">replay</button> '
                '<button name="verb" value="resolve">resolve without replaying</button>'
            ),
        )
    return Markup(body)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


@dataclass
class ActionResult:
    """What an action did, for its page and its log line."""

    verb: str
    topic: str
    done: int
    already: int
    failed: int
    errors: list[str]
    what: str


def _picks(query: Query) -> list[tuple[int, int]]:
    picks = []
    for pick in query.get("pick", []):
        partition, _, offset = pick.partition("/")
        if not (partition.isdigit() and offset.isdigit()):
            raise bad_request(f"pick={pick!r}: must be PARTITION/OFFSET")
        picks.append((int(partition), int(offset)))
    return picks


def act(dashboard: Dashboard, queue: str, query: Query) -> ActionResult:
    """Replay or resolve the picked dead letters, or all that match the filters."""
    verb = (query.get("verb") or [""])[0]
    if verb not in VERBS:
        raise bad_request(f"verb={verb!r}: must be one of {', '.join(VERBS)}")
    if (query.get("all") or [""])[0] == "1":
        selections = [filters_of(query)]
        what = "all that match " + (
            ", ".join(f"{k}={v}" for k, v in _filter_fields(query).items() if v) or "(no filter)"
        )
    else:
        picks = _picks(query)
        if not picks:
            raise bad_request("nothing selected: pick dead letters, or act on all that match the filters")
        selections = [Filters(partition=p, start_offset=o, end_offset=o) for p, o in picks]
        what = ", ".join(f"{p}/{o}" for p, o in picks)
    total = ReplayResult()
    with _reader(dashboard, queue) as reader:
        for filters in selections:
            result = replay(reader, dashboard.broker.client_config, filters, resolve=verb == "resolve")
            total.replayed += result.replayed
            total.resolved += result.resolved
            total.already += result.already
            total.failed += result.failed
            total.errors += result.errors
        topic = reader.topic
    done = total.resolved if verb == "resolve" else total.replayed
    return ActionResult(verb, topic, done, total.already, total.failed, total.errors, what)


def result_page(queue: str, result: ActionResult) -> Markup:
    past = "Replayed" if result.verb == "replay" else "Resolved"
    text = (
        f"{past} {result.done} dead letter(s) of {result.topic} ({result.what}); "
        f"{result.already} replayed or resolved before"
        + (f"; {result.failed} failed" if result.failed else "")
        + "."
    )
    errors = "".join(f"<li>{escape(e)}</li>" for e in result.errors)
    css = "refused" if result.failed else "notice"
    back = link(f"/dead-letters/{queue}", "back to the dead letters")
    return Markup(
        f"<p class='{css}'>{escape(text)}</p>" + (f"<ul>{errors}</ul>" if errors else "") + f"<p>{back}</p>"
    )
