"""Partition counts made visible, and where a new consumer group starts."""

from __future__ import annotations

import io
import logging
import textwrap
import threading
import time
from pathlib import Path

import dramatiq
import pytest
from confluent_kafka import Producer

from dramatiq_kafka import ConfigurationError, KafkaBroker, QueueConfig
from dramatiq_kafka.cli import main
from dramatiq_kafka.testing import running_worker
from dramatiq_kafka.wire import encode_message, message_headers
from tests.helpers import create_topic


def test_an_existing_topic_with_fewer_partitions_than_asked_is_a_warning(
    kafka_bootstrap: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_topic(kafka_bootstrap, unique_name, 1)
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={unique_name: QueueConfig(partitions=4)},
    )
    try:
        actor = dramatiq.actor(lambda: None, actor_name="job", queue_name=unique_name, broker=broker)
        with caplog.at_level(logging.WARNING):
            actor.send()
            actor.send()
    finally:
        broker.close()
    warnings = [r.getMessage() for r in caplog.records if "fewer than" in r.getMessage()]
    assert warnings == [
        f"Topic {unique_name!r} has 1 partition(s), fewer than the 4 its QueueConfig asks: at most 1 "
        "worker process(es) of the group get its jobs. `dramatiq-kafka topics ensure --add-partitions "
        "MODULE` adds them (keyed jobs then move to other partitions)."
    ]


def test_topics_ensure_reports_too_few_partitions_and_adds_them_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, unique_name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    module = f"app_{unique_name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            import dramatiq
            from dramatiq_kafka import KafkaBroker, QueueConfig

            broker = KafkaBroker(bootstrap_servers={kafka_bootstrap!r}, topic_prefix="{unique_name}.",
                                 queues={{"mail": QueueConfig(partitions=3)}})

            @dramatiq.actor(queue_name="mail", broker=broker)
            def send_mail(to): ...
            """
        )
    )
    create_topic(kafka_bootstrap, f"{unique_name}.mail", 1)

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()

    code, out, err = run("topics", "ensure", module)
    assert code == 1
    assert f"{unique_name}.mail" in out and "too few partitions (1 of 3)" in out
    assert "--add-partitions adds them" in err and "order per key" in err

    code, out, err = run("topics", "ensure", module, "--add-partitions")
    assert code == 0, err
    assert "partitions added (1 -> 3)" in out
    code, out, _ = run("topics", "ensure", module)
    assert code == 0 and "too few" not in out


def test_new_group_start_must_be_earliest_or_latest() -> None:
    with pytest.raises(ConfigurationError, match=r"QueueConfig\(new_group_start='newest'\): must be one of"):
        QueueConfig(new_group_start="newest")
    with pytest.raises(ConfigurationError, match=r"KafkaBroker\(new_group_start='first'\)"):
        KafkaBroker(new_group_start="first")


@pytest.mark.parametrize("start", ["earliest", "latest"])
def test_a_new_group_starts_where_the_queue_says(kafka_bootstrap: str, unique_name: str, start: str) -> None:
    queue = unique_name
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"new-group-{unique_name}",
        queues={queue: QueueConfig(partitions=1, new_group_start=start)},
    )
    dramatiq.set_broker(broker)
    ran: list[str] = []
    lock = threading.Lock()

    @dramatiq.actor(queue_name=queue)
    def job(tag: str) -> None:
        with lock:
            ran.append(tag)

    # Jobs another group already ran: in the topic before this group exists.
    broker.ensure_topics(queue)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        message = job.message(f"old-{i}")
        producer.produce(broker.topic_name(queue), encode_message(message), headers=message_headers(message))
    producer.flush(10)
    try:
        with running_worker(broker):
            # "latest" is resolved when the group first fetches: send until a new job runs.
            deadline = time.monotonic() + 30
            sent = 0
            while not any(tag.startswith("new") for tag in ran) and time.monotonic() < deadline:
                job.send(f"new-{sent}")
                sent += 1
                broker.flush_producer()
                time.sleep(0.5)
            time.sleep(1)
    finally:
        broker.close()
    old = sorted(tag for tag in ran if tag.startswith("old"))
    assert any(tag.startswith("new") for tag in ran)
    assert old == ([] if start == "latest" else ["old-0", "old-1", "old-2"])
