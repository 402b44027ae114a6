"""The dashboard's dead letters against a real Kafka: browse, show one, replay, resolve."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import dramatiq
import pytest

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.web import make_app

from .helpers import record_count, run_worker

TOKEN = "s3cret-token-for-tests"


def request(
    app: Any, path: str, method: str = "GET", form: dict[str, Any] | None = None, **headers: str
) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, _headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = urlencode(form or {}, doseq=True).encode()
    path, _, query = path.partition("?")
    environ = {
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
    return seen["status"], text


def listed(page: str) -> list[tuple[str, str, str]]:
    """(partition/offset, actor, status) of each dead letter on a listing."""
    return re.findall(
        r'<a href="/dead-letters/[^/"]+/(\d+/\d+)">[^<]*</a></td><td>([^<]*)</td>'
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
    assert listed(page) == [("0/0", "parse", ""), ("0/1", "parse", ""), ("0/2", "parse", "")]
    assert "ValueError" in page and "KeyError" in page
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
    assert status.startswith("403") and "Actions are off" in text and "DRAMATIQ_KAFKA_WEB_TOKEN" in text
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
    app = make_app(dead, cache_seconds=0, token=TOKEN, sample_every=None)
    _, page = request(app, "/dead-letters/work")
    assert 'name="token"' in page and 'value="0/1"' in page
    with caplog.at_level(logging.INFO, logger="dramatiq_kafka.web.app"):
        status, text = request(
            app,
            "/dead-letters/work/act",
            "POST",
            {"verb": "replay", "pick": "0/1", "token": TOKEN},
            origin="http://127.0.0.1:8080",
            sec_fetch_site="same-origin",
        )
    assert status.startswith("200"), text
    assert "Replayed 1 dead letter(s)" in text
    assert record_count(dead.bootstrap_servers, source) == before + 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "127.0.0.9 asks to replay 0/1" in logged and "replay of 0/1" in logged and "1 done" in logged
    assert TOKEN not in logged
    assert listed(request(app, "/dead-letters/work")[1])[1] == ("0/1", "parse", "replayed or resolved")
    # Two picks in one action: each counted once, as done, not as done before.
    status, text = request(
        app, "/dead-letters/work/act", "POST", {"verb": "resolve", "pick": ["0/0", "0/2"], "token": TOKEN}
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
    status, text = request(
        app, "/dead-letters/work/act", "POST", {"verb": "delete", "all": "1", "token": TOKEN}
    )
    assert status.startswith("400") and "verb='delete'" in text
