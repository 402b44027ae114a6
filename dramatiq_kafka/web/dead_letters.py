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

from ..dead_letters import DeadLetterReader, Filters, dlq_group_for, newest, replay, show
from ..errors import RequestRefused
from .html import Markup, escape, form, hidden, link, table
from .readings import Dashboard

__all__ = ["Action", "ActionResult", "act", "action_of", "index", "listing", "record_page", "result_page"]

#: Dead letters a listing shows unless its ``limit`` says otherwise, and the most it may.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The actions a page may ask for.
VERBS = ("replay", "resolve")
#: The orders a listing may take; the first is the default.
ORDERS = ("newest", "oldest")

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


def whole_number(text: str) -> bool:
    """Whether ``text`` is a whole number in ASCII digits (``"²".isdigit()`` is true)."""
    return text.isascii() and text.isdigit()


def _number(query: Query, name: str) -> int | None:
    text = (query.get(name) or [""])[0].strip()
    if not text:
        return None
    if not whole_number(text):
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
        [link(f"dead-letters/{r['queue']}", r["queue"]), r["dead_letters"]] for r in dashboard.queue_rows()
    ]
    return table(["queue", "dead letters kept"], rows)


def _when(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _token_field() -> Markup:
    return Markup('<label>token <input type="password" name="token" autocomplete="off" required></label> ')


def listing(dashboard: Dashboard, queue: str, query: Query, *, actions: bool) -> Markup:
    """The dead letters of ``queue`` that match the query's filters, at most ``limit``:
    the newest first, or (``order=oldest``) the oldest first."""
    filters = filters_of(query)
    limit = _number(query, "limit") or DEFAULT_LIMIT
    if limit > MAX_LIMIT:
        raise bad_request(f"limit={limit}: at most {MAX_LIMIT}")
    order = (query.get("order") or [ORDERS[0]])[0]
    if order not in ORDERS:
        raise bad_request(f"order={order!r}: must be one of {', '.join(ORDERS)}")
    pending = (query.get("pending") or [""])[0] == "1"
    with _reader(dashboard, queue) as reader:
        if order == "newest":
            found = newest(reader, filters, limit=limit, pending_only=pending)
        else:
            found = list(show(reader, filters, limit=limit, pending_only=pending))
        topic = reader.topic
    fields = _filter_fields(query)
    inputs = "".join(
        f'<label>{name} <input name="{name}" value="{escape(value)}" size="12"></label> '
        for name, value in fields.items()
    )
    checked = " checked" if pending else ""
    orders = "".join(
        f'<option value="{o}"{" selected" if o == order else ""}>{o} first</option>' for o in ORDERS
    )
    filter_form = form(
        f"dead-letters/{queue}",
        Markup(
            inputs
            + f'<label><input type="checkbox" name="pending" value="1"{checked}> not replayed yet</label> '
            f'<label>limit <input name="limit" value="{limit}" size="5"></label> '
            f'<select name="order">{orders}</select> <button>filter</button>'
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
                link(f"dead-letters/{queue}/{pick}", pick),
                shown["actor"] or "?",
                shown["error_type"] or "",
                Markup(f"<span class='text'>{escape((shown['error_message'] or '')[:200])}</span>"),
                f"{shown['source_topic'] or '?'}/{shown['source_partition']}@{shown['source_offset']}",
                _when(dead.timestamp),
                "replayed or resolved" if replayed else "",
            ]
        )
    header = ["", "partition/offset", "actor", "error type", "error", "from", "dead-lettered", "status"]
    body = f"<p>Topic {escape(topic)}: {len(found)} shown, {order} first (at most {limit}).</p>{filter_form}"
    body += table(header, rows)
    if actions:
        picked = form(
            f"dead-letters/{queue}/act",
            Markup(
                _token_field() + '<button name="verb" value="replay">replay the selected</button> '
                '<button name="verb" value="resolve">resolve the selected</button>'
            ),
        ).replace("<form ", '<form id="picked" ', 1)
        matching = form(
            f"dead-letters/{queue}/act",
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
    rows = [row for row in rows if row[0] != "timestamp"]  # shown below, as a date
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
            f"dead-letters/{queue}/act",
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


@dataclass(frozen=True)
class Action:
    """What a request asks for: replay or resolve, which dead letters, said in words."""

    verb: str
    filters: Filters
    what: str


@dataclass
class ActionResult:
    """What an action did, for its page and its log line."""

    action: Action
    topic: str
    done: int
    already: int
    deferred: int
    failed: int
    errors: list[str]


def _picks(query: Query) -> frozenset[tuple[int, int]]:
    picks = set()
    for pick in query.get("pick", []):
        partition, _, offset = pick.partition("/")
        if not (whole_number(partition) and whole_number(offset)):
            raise bad_request(f"pick={pick!r}: must be PARTITION/OFFSET")
        picks.add((int(partition), int(offset)))
    return frozenset(picks)


def action_of(query: Query) -> Action:
    """The action a form asks for: the picked dead letters, or all that match its filters."""
    verb = (query.get("verb") or [""])[0]
    if verb not in VERBS:
        raise bad_request(f"verb={verb!r}: must be one of {', '.join(VERBS)}")
    if (query.get("all") or [""])[0] == "1":
        named = ", ".join(f"{k}={v}" for k, v in _filter_fields(query).items() if v)
        return Action(verb, filters_of(query), "all that match " + (named or "(no filter)"))
    picks = _picks(query)
    if not picks:
        raise bad_request("nothing selected: pick dead letters, or act on all that match the filters")
    return Action(verb, Filters(picks=picks), ", ".join(f"{p}/{o}" for p, o in sorted(picks)))


def act(dashboard: Dashboard, queue: str, action: Action) -> ActionResult:
    """Replay or resolve, in one pass over the dead-letter topic (``replay``'s, as the
    command's)."""
    with _reader(dashboard, queue) as reader:
        result = replay(
            reader, dashboard.broker.client_config, action.filters, resolve=action.verb == "resolve"
        )
        topic = reader.topic
    done = result.resolved if action.verb == "resolve" else result.replayed
    return ActionResult(action, topic, done, result.already, result.deferred, result.failed, result.errors)


def result_page(queue: str, result: ActionResult) -> Markup:
    past = "Replayed" if result.action.verb == "replay" else "Resolved"
    found = result.done + result.already + result.deferred + result.failed
    missing = len(result.action.filters.picks) - found if result.action.filters.picks else 0
    text = (
        f"{past} {result.done} dead letter(s) of {result.topic} ({result.action.what}); "
        f"{result.already} replayed or resolved before"
        + (
            f"; {result.deferred} left for a later run (too many to remember at once)"
            if result.deferred
            else ""
        )
        + (f"; {result.failed} failed" if result.failed else "")
        + (f"; {missing} not found (no dead letter at that partition/offset)" if missing > 0 else "")
        + "."
    )
    errors = "".join(f"<li>{escape(e)}</li>" for e in result.errors)
    css = "refused" if result.failed else "notice"
    back = link(f"dead-letters/{queue}", "back to the dead letters")
    return Markup(
        f"<p class='{css}'>{escape(text)}</p>" + (f"<ul>{errors}</ul>" if errors else "") + f"<p>{back}</p>"
    )
