"""The dashboard's dead letters against a real Kafka: browse, show one, replay, resolve."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import dramatiq
import pytest

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.web import make_app, make_asgi_app

from .helpers import record_count, run_worker

TOKEN = "s3cret-token-for-tests"


def request(
    app: Any,
    path: str,
    method: str = "GET",
    form: dict[str, Any] | None = None,
    *,
    script_name: str = "",
    follow: bool = True,
    **headers: str,
) -> tuple[str, str]:
    """The status and body of a request to the WSGI ``app`` mounted at ``script_name``;
    a redirect (the answer to an action) is followed with a GET, as a browser does."""
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        seen.update(status=status, headers=dict(response_headers))

    body = urlencode(form or {}, doseq=True).encode()
    path, _, query = path.partition("?")
    environ = {
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_METHOD": method,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "REMOTE_ADDR": "127.0.0.9",
        "HTTP_HOST": "127.0.0.1:8080",
        **{f"HTTP_{name.upper()}": value for name, value in headers.items()},
    }
    text = b"".join(app(environ, start_response)).decode()
    if follow and seen["status"].startswith("303"):
        location = seen["headers"]["Location"]
        assert location.startswith(f"{script_name}/"), location
        return request(app, location[len(script_name) :], script_name=script_name)
    return seen["status"], text


def listed(page: str) -> list[tuple[str, str, str]]:
    """(partition/offset, actor, status) of each dead letter on a listing."""
    return re.findall(
        r'<a href="dead-letters/[^/"]+/(\d+/\d+)">[^<]*</a></td><td>([^<]*)</td>'
        r".*?<td>(replayed or resolved|)</td></tr>",
        page,
    )


@pytest.fixture
def dead(kafka_bootstrap: str, unique_name: str) -> Iterator[KafkaBroker]:
    """Three jobs of `work` dead-lettered by a real worker: 0 and 2 ValueError, 1 KeyError."""
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=f"{unique_name}.",
        queues={"work": QueueConfig(partitions=1, ordered=True, dead_letter=DeadLetter(max_retries=0))},
        status_interval=None,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work")
    def parse(n: int, secret: str) -> None:
        if n == 1:
            raise KeyError(n)
        raise ValueError(f"bad input {n}")

    for n in range(3):
        parse.send(n, secret="<b>kw</b>")
    run_worker(broker, "work", fail_fast=False)
    yield broker
    broker.close()


def test_dead_letters_are_listed_filtered_and_shown_in_full(dead: KafkaBroker) -> None:
    app = make_app(dead, cache_seconds=0, sample_every=None)
    status, page = request(app, "/dead-letters/work")
    assert status.startswith("200")
    # The newest first, unless told otherwise; at most `limit`.
    assert listed(page) == [("0/2", "parse", ""), ("0/1", "parse", ""), ("0/0", "parse", "")]
    assert "ValueError" in page and "KeyError" in page
    oldest = request(app, "/dead-letters/work?order=oldest")[1]
    assert listed(oldest) == [("0/0", "parse", ""), ("0/1", "parse", ""), ("0/2", "parse", "")]
    assert [row[0] for row in listed(request(app, "/dead-letters/work?limit=1")[1])] == ["0/2"]
    assert [row[0] for row in listed(request(app, "/dead-letters/work?limit=1&order=oldest")[1])] == ["0/0"]
    assert [row[0] for row in listed(request(app, "/dead-letters/work?limit=2&end=1")[1])] == ["0/1", "0/0"]
    status, text = request(app, "/dead-letters/work?order=random")
    assert status.startswith("400") and "order='random': must be one of newest, oldest" in text
    _, only = request(app, "/dead-letters/work?error_type=KeyError")
    assert [row[0] for row in listed(only)] == ["0/1"]
    _, one = request(app, "/dead-letters/work/0/2")
    assert "<td>timestamp</td>" not in one and "UTC" in one  # a date, not milliseconds
    assert "bad input 2" in one and "Traceback" in one and f"{dead.topic_prefix}work" in one
    # Arguments are shown escaped, never as markup.
    assert "&lt;b&gt;kw&lt;/b&gt;" in one and "<b>kw</b>" not in one
    assert request(app, "/dead-letters/work/0/9")[0].startswith("404")
    assert request(app, "/dead-letters/nope")[0].startswith("404")
    status, text = request(app, "/dead-letters/work?partition=x")
    assert status.startswith("400") and "partition='x': must be a whole number" in text
    # Digits that are not ASCII are refused as bad input, not taken for Kafka not answering.
    status, text = request(app, "/dead-letters/work?limit=%C2%B2")
    assert status.startswith("400") and "limit='²'" in text
    assert request(app, "/dead-letters/work/%C2%B2/1")[0].startswith("404")
    # Without a token no action is offered, and none is taken.
    assert 'name="token"' not in page
    status, text = request(app, "/dead-letters/work/act", "POST", {"verb": "replay", "pick": "0/0"})
    assert status.startswith("403") and "Actions are off" in text, text
    assert "make_app(broker, token=...)" in text and "DRAMATIQ_KAFKA_WEB_TOKEN" in text
    assert dead.bootstrap_servers not in page + one


def test_an_action_needs_the_token_and_the_same_site(dead: KafkaBroker) -> None:
    source = f"{dead.topic_prefix}work"
    before = record_count(dead.bootstrap_servers, source)
    app = make_app(dead, cache_seconds=0, token=TOKEN, sample_every=None)
    replay_one = {"verb": "replay", "pick": "0/0"}
    status, text = request(app, "/dead-letters/work/act", "POST", replay_one)
    assert status.startswith("403") and "Wrong or missing token" in text
    status, _ = request(app, "/dead-letters/work/act", "POST", {**replay_one, "token": "guess"})
    assert status.startswith("403")
    status, text = request(
        app, "/dead-letters/work/act", "POST", {**replay_one, "token": TOKEN}, sec_fetch_site="cross-site"
    )
    assert status.startswith("403") and "Cross-site request refused" in text
    status, text = request(
        app, "/dead-letters/work/act", "POST", {**replay_one, "token": TOKEN}, origin="http://evil.example"
    )
    assert status.startswith("403") and "Origin" in text
    assert request(app, "/dead-letters/work", "POST", {**replay_one, "token": TOKEN})[0].startswith("405")
    assert request(app, "/dead-letters/work/act")[0].startswith("405")
    read_only = make_app(dead, cache_seconds=0, token=TOKEN, read_only=True, sample_every=None)
    status, text = request(read_only, "/dead-letters/work/act", "POST", {**replay_one, "token": TOKEN})
    assert status.startswith("403") and "read-only" in text
    # Nothing was sent by any of them.
    assert record_count(dead.bootstrap_servers, source) == before


def test_replay_and_resolve_from_the_page(dead: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    source = f"{dead.topic_prefix}work"
    before = record_count(dead.bootstrap_servers, source)
    app = make_app(dead, cache_seconds=0, token=TOKEN, sample_every=None, origins=["https://ops.example"])
    # Mounted under a path: links, forms and the redirect stay under it.
    _, page = request(app, "/dead-letters/work", script_name="/ops")
    assert 'name="token"' in page and 'value="0/1"' in page
    assert "<base href='/ops/'>" in page and 'action="dead-letters/work/act"' in page
    with caplog.at_level(logging.INFO, logger="dramatiq_kafka.web.app"):
        status, text = request(
            app,
            "/dead-letters/work/act",
            "POST",
            {"verb": "replay", "pick": "0/1", "token": TOKEN},
            script_name="/ops",
            follow=False,
            origin="http://127.0.0.1:8080",
            sec_fetch_site="same-origin",
        )
    assert status.startswith("303"), text
    location = text.removeprefix("Done: see ").strip()
    assert location.startswith("/ops/dead-letters/work/done/"), location
    # The result's page is a GET: reloading it shows the result and posts nothing again.
    for _ in range(2):
        status, text = request(app, location.removeprefix("/ops"), script_name="/ops")
        assert status.startswith("200") and "Replayed 1 dead letter(s)" in text, text
    assert record_count(dead.bootstrap_servers, source) == before + 1
    assert request(app, "/dead-letters/work/done/unknown")[0].startswith("404")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "127.0.0.9 asks to replay 0/1" in logged and "replay of 0/1" in logged and "1 done" in logged
    assert TOKEN not in logged
    assert listed(request(app, "/dead-letters/work")[1])[1] == ("0/1", "parse", "replayed or resolved")
    # Two picks in one action: each counted once, as done, not as done before.
    # From the public address a proxy serves the dashboard at (another Host): a trusted origin.
    status, text = request(
        app,
        "/dead-letters/work/act",
        "POST",
        {"verb": "resolve", "pick": ["0/0", "0/2"], "token": TOKEN},
        origin="https://ops.example",
    )
    assert "Resolved 2 dead letter(s) of" in text and "; 0 replayed or resolved before." in text, text
    status, text = request(
        app, "/dead-letters/work/act", "POST", {"verb": "resolve", "pick": ["0/0", "0/2"], "token": TOKEN}
    )
    assert "Resolved 0 dead letter(s) of" in text and "; 2 replayed or resolved before." in text, text
    # Resolve all that match a filter: committed as handled, nothing sent.
    status, text = request(
        app,
        "/dead-letters/work/act",
        "POST",
        {"verb": "resolve", "all": "1", "error_type": "ValueError", "token": TOKEN},
    )
    assert status.startswith("200") and "Resolved 0 dead letter(s)" in text, text
    # Below the DLQ group's commit (3 now) every dead letter counts as done before.
    assert "3 replayed or resolved before" in text
    assert record_count(dead.bootstrap_servers, source) == before + 1
    assert listed(request(app, "/dead-letters/work?pending=1")[1]) == []
    # Again: nothing left to do.
    _, text = request(app, "/dead-letters/work/act", "POST", {"verb": "replay", "all": "1", "token": TOKEN})
    assert "Replayed 0 dead letter(s)" in text and "3 replayed or resolved before" in text
    # A pick past the topic's end (an old link): said to be missing, not silently done.
    _, text = request(
        app, "/dead-letters/work/act", "POST", {"verb": "replay", "pick": "0/99", "token": TOKEN}
    )
    assert "Replayed 0 dead letter(s)" in text, text
    assert "; 1 not found (no dead letter at that partition/offset)." in text, text
    status, text = request(
        app, "/dead-letters/work/act", "POST", {"verb": "delete", "all": "1", "token": TOKEN}
    )
    assert status.startswith("400") and "verb='delete'" in text


def asgi_request(
    app: Any, path: str, method: str = "GET", body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], str]:
    """One HTTP request to the ASGI ``app`` mounted at ``/kafka``, as uvicorn or Starlette's
    ``Mount`` makes it (the path keeps the mount point)."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "root_path": "/kafka",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.7", 50000),
    }
    # The body in two parts, as a server may deliver it.
    events = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    asyncio.run(app(scope, receive, send))
    start, answer = sent
    found = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], found, answer["body"].decode()


def test_the_asgi_application_serves_the_pages_and_actions(dead: KafkaBroker) -> None:
    source = f"{dead.topic_prefix}work"
    before = record_count(dead.bootstrap_servers, source)
    app = make_asgi_app(dead, cache_seconds=0, token=TOKEN, sample_every=None)
    status, headers, page = asgi_request(app, "/kafka/dead-letters/work")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<base href='/kafka/'>" in page and listed(page)[0] == ("0/2", "parse", "")
    # A server that strips the mount point from the path is served the same page.
    assert asgi_request(app, "/dead-letters/work")[2] == page
    assert asgi_request(app, "/kafka/queue/nope")[0] == 404
    form = urlencode({"verb": "replay", "pick": "0/2", "token": TOKEN}).encode()
    kind = "application/x-www-form-urlencoded"
    status, _, text = asgi_request(
        app, "/kafka/dead-letters/work/act", "POST", form, content_type=kind, sec_fetch_site="cross-site"
    )
    assert status == 403 and "Cross-site request refused" in text
    status, headers, _ = asgi_request(
        app, "/kafka/dead-letters/work/act", "POST", form, content_type=kind, host="127.0.0.1:8000"
    )
    assert status == 303 and headers["location"].startswith("/kafka/dead-letters/work/done/")
    status, _, text = asgi_request(app, headers["location"])
    assert status == 200 and "Replayed 1 dead letter(s)" in text
    assert record_count(dead.bootstrap_servers, source) == before + 1
    too_large = b"token=" + b"x" * 70_000
    assert asgi_request(app, "/kafka/dead-letters/work/act", "POST", too_large, content_type=kind)[0] == 413
    # The lifespan's shutdown closes the dashboard.
    lifespan = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    said: list[str] = []

    async def receive() -> dict[str, Any]:
        return lifespan.pop(0)

    async def send(event: dict[str, Any]) -> None:
        said.append(event["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert said == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
