"""The `dramatiq-kafka` command against a real Kafka."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig
from dramatiq_kafka.cli import main, parse_properties, with_default_ports
from tests.helpers import closed_port, create_topic, read_topic, record_count, run_worker

CLI = str(Path(sys.executable).with_name("dramatiq-kafka"))


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> Any:
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


# -- usage -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["topics"], ["topics", "ensure"], ["lag"], ["dlq"], ["dlq", "show"], ["dlq", "replay"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    result = subprocess.run([CLI, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: dramatiq-kafka {' '.join(command)}".rstrip())


def test_unreachable_kafka_is_a_clear_error_at_once() -> None:
    servers = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    # With a 60 s request timeout: the command must not wait for it.
    result = subprocess.run(
        [CLI, "lag", "-b", servers, "--timeout", "60"], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 3
    assert f"Kafka is not reachable at '{servers}'" in result.stderr
    assert "Connection refused" in result.stderr
    assert time.monotonic() - started < 45


def test_bad_usage_exits_2(tmp_path: Path, kafka_bootstrap: str) -> None:
    config = tmp_path / "client.properties"
    config.write_text("# librdkafka\nsecurity.protocol=PLAINTEXT\nsasl.password=\\u12zz-Hunter2-TopSecret\n")
    code, out, err = run("lag", "--config", str(config))
    assert code == 2
    assert "client.properties:3: the value of 'sasl.password': malformed \\uXXXX escape" in err
    assert "Hunter2" not in err + out

    code, _, err = run("lag", "--config", str(tmp_path / "missing.properties"))
    assert code == 2 and "Cannot read the config file" in err

    code, _, err = run("lag", "--broker", "no.such.module")
    assert code == 2 and "Cannot import the broker module 'no.such.module'" in err

    code, _, err = run("lag", "--broker", "json:loads")
    assert code == 2 and "'json:loads' holds no KafkaBroker (found function)" in err

    code, _, err = run("dlq", "show", "q", "-b", kafka_bootstrap, "--offsets", "9-3")
    assert code == 2 and "--offsets '9-3': the start is after the end" in err

    assert run("lag", "--no-such-option")[0] == 2


def test_properties_files_are_read_as_java_does() -> None:
    text = (
        "# comment\n  ! another\n\n"
        "bootstrap.servers=127.0.0.1:1\n"
        "sasl.username: alice\n"
        "sasl.password Hunter2-TopSecret\n"
        "client.id   =  two \\\n      words\n"
        "key\\ with\\:separators=\\u0041\\t\n"
        "empty\n"
    )
    assert parse_properties(text) == {
        "bootstrap.servers": "127.0.0.1:1",
        "sasl.username": "alice",
        "sasl.password": "Hunter2-TopSecret",
        "client.id": "two words",
        "key with:separators": "A\t",
        "empty": "",
    }


def test_a_key_value_properties_line_works_and_its_secret_is_never_shown(tmp_path: Path) -> None:
    servers = f"127.0.0.1:{closed_port()}"
    config = tmp_path / "client2.properties"
    # The first-contact report's file: a `key value` line, which Java reads.
    config.write_text(f"bootstrap.servers={servers}\nsasl.password Hunter2-TopSecret\n")
    code, out, err = run("lag", "--config", str(config))
    assert code == 3, err
    assert f"Kafka is not reachable at '{servers}'" in err
    assert "Hunter2" not in out + err


def test_a_bare_host_gets_kafkas_default_port() -> None:
    assert with_default_ports("127.0.0.1") == "127.0.0.1:9092"
    assert with_default_ports("a:1, b,[::1],[::1]:5") == "a:1,b:9092,[::1]:9092,[::1]:5"
    code, _, err = run("lag", "-b", "127.0.0.1", "--timeout", "2")
    assert "invalid literal" not in err
    assert code == 0 or "Kafka is not reachable at '127.0.0.1:9092'" in err, err


def test_a_closed_pipe_ends_the_command_quietly(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name, 2)
    command = subprocess.Popen(
        [CLI, "lag", unique_name, "-b", kafka_bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()  # `| head` that already has what it wanted
    stderr = command.stderr.read()
    assert command.wait(60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_config_file_settings_reach_kafka(tmp_path: Path, kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name, 1)
    config = tmp_path / "client.properties"
    config.write_text(f"bootstrap.servers={kafka_bootstrap}\nclient.id=ops\n")
    assert run_json("topics", "--config", str(config), "--prefix", unique_name)[0]["partitions"] == 1
    # A setting librdkafka refuses is named.
    config.write_text(f"bootstrap.servers={kafka_bootstrap}\nsecurity.protocol=carrier-pigeon\n")
    code, _, err = run("topics", "--config", str(config))
    assert code == 2 and "security.protocol" in err
    assert "carrier-pigeon" not in err  # named, never its value


# -- topics and lag ----------------------------------------------------------------------------------


def write_app(tmp_path: Path, name: str, bootstrap: str) -> str:
    """A broker module in a directory of its own; returns its module name."""
    module = f"app_{name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            import dramatiq
            from dramatiq_kafka import DeadLetter, KafkaBroker, QueueConfig

            broker = KafkaBroker(
                bootstrap_servers={bootstrap!r},
                group_id="workers",
                topic_prefix="{name}.",
                queues={{"mail": QueueConfig(partitions=3, dead_letter=DeadLetter(topic="graveyard"))}},
                create_topics=False,
            )
            dramatiq.set_broker(broker)

            @dramatiq.actor(queue_name="mail")
            def send_mail(to): ...

            @dramatiq.actor(queue_name="reports")
            def report(day): ...
            """
        )
    )
    return module


def test_topics_ensure_leaves_the_broker_module_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, unique_name: str
) -> None:
    # The command used to put its own admin client into the broker, and close it.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = write_app(tmp_path, unique_name, kafka_bootstrap)
    broker = importlib.import_module(module).broker
    admin = broker.admin
    assert {row["state"] for row in run_json("topics", "ensure", module)} == {"created"}
    assert broker.admin is admin and broker.create_topics is False


def test_topics_ensure_creates_what_the_broker_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, unique_name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_app(tmp_path, unique_name, kafka_bootstrap)
    p = f"{unique_name}."
    created = run_json("topics", "ensure", module)
    assert {(row["topic"], row["state"]) for row in created} == {
        (f"{p}mail", "created"),
        (f"{p}mail.DQ", "created"),
        (f"{p}graveyard", "created"),
        (f"{p}reports", "created"),
        (f"{p}reports.DQ", "created"),
        (f"{p}reports.XQ", "created"),
    }
    assert {row["state"] for row in run_json("topics", "ensure", module)} == {"exists"}

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(5):
        producer.produce(f"{p}mail", b"{}", partition=i % 3)
    producer.flush(10)
    listed = {row["topic"]: row for row in run_json("topics", "--broker", module)}
    mail = listed[f"{p}mail"]
    assert (mail["kind"], mail["partitions"], mail["messages"]) == ("queue", 3, 5)
    assert mail["end_offsets"] == {"0": 2, "1": 2, "2": 1}
    assert listed[f"{p}graveyard"]["kind"] == "dead letters"

    code, out, _ = run("topics", "--broker", module, "--queue", "mail")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "QUEUE",
        "KIND",
        "TOPIC",
        "PARTITIONS",
        "MESSAGES",
        "END",
        "OFFSETS",
    ]
    assert f"{p}mail " in out and "0:2 1:2 2:1" in out and f"{p}reports" not in out


def test_lag_is_end_minus_committed(kafka_bootstrap: str, unique_name: str) -> None:
    queue = unique_name
    create_topic(kafka_bootstrap, queue, 3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, count in ((0, 5), (1, 3), (2, 4)):
        for _ in range(count):
            producer.produce(queue, b"{}", partition=partition)
    producer.flush(10)
    group = f"group-{unique_name}"
    committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(queue, 0, 2), TopicPartition(queue, 2, 4)], asynchronous=False)
    committer.close()

    report = run_json("lag", queue, "-b", kafka_bootstrap, "--group", group)
    rows = {(row["queue"], row["partition"]): row for row in report["partitions"]}
    assert {key: (row["committed"], row["end"], row["lag"]) for key, row in rows.items()} == {
        (queue, 0): (2, 5, 3),
        (queue, 1): (-1, 3, 3),  # nothing committed: the group starts at the first record
        (queue, 2): (4, 4, 0),
    }
    assert report["total"] == 6

    code, out, _ = run("lag", queue, "-b", kafka_bootstrap, "--group", group)
    assert code == 0
    table = [line.split() for line in out.splitlines()[1:]]
    assert table[0] == ["QUEUE", "PARTITION", "COMMITTED", "END", "LAG"]
    assert [queue, "1", "-", "3", "3"] in table and [queue, "total", "6"] in table

    # No warning for a group that committed; one for a group that never did (a typo?).
    assert "warning" not in run("lag", queue, "-b", kafka_bootstrap, "--group", group)[2]
    code, _, err = run("lag", queue, "-b", kafka_bootstrap, "--group", f"{group}-typo")
    assert code == 0
    assert f"warning: group '{group}-typo' has no committed offset on these topics" in err

    code, _, err = run("lag", f"{queue}-none", "-b", kafka_bootstrap)
    assert code == 1 and f"The topic '{queue}-none' of queue '{queue}-none' does not exist." in err


# -- dead letters ------------------------------------------------------------------------------------


@pytest.fixture
def dead_letters(kafka_bootstrap: str, unique_name: str) -> dict[str, Any]:
    """Five jobs dead-lettered by a real worker: 3 `parse` (ValueError), 2 `fetch` (KeyError)."""
    queue = unique_name
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={
            # Ordered: the dead letters keep the order of the jobs.
            queue: QueueConfig(partitions=1, ordered=True, dead_letter=DeadLetter(max_retries=0)),
            f"{queue}-other": QueueConfig(partitions=1),
        },
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue)
    def parse(n: int) -> None:
        raise ValueError(f"bad input {n}")

    @dramatiq.actor(queue_name=queue)
    def fetch(n: int) -> None:
        raise KeyError(n)

    for n in range(5):
        (parse if n in (0, 2, 4) else fetch).send_with_options(args=(n,), partition_key=f"key-{n}")
    run_worker(broker, queue, fail_fast=False)
    broker.declare_queue(f"{queue}-other")
    broker.ensure_topics(f"{queue}-other")
    broker.close()
    return {"queue": queue, "group": f"group-{unique_name}", "bootstrap": kafka_bootstrap}


def dlq(command: str, d: dict[str, Any], *options: str) -> tuple[int, str, str]:
    return run("dlq", command, d["queue"], "-b", d["bootstrap"], "--group", d["group"], *options)


def dlq_json(command: str, d: dict[str, Any], *options: str) -> Any:
    code, out, err = dlq(command, d, *options, "--json")
    assert code == 0, err
    return json.loads(out)


def test_dlq_show_decodes_jobs_errors_and_origin(dead_letters: dict[str, Any]) -> None:
    d, queue = dead_letters, dead_letters["queue"]
    shown = dlq_json("show", d)
    assert [(r["offset"], r["actor"], r["args"], r["error_type"]) for r in shown] == [
        (0, "parse", [0], "ValueError"),
        (1, "fetch", [1], "KeyError"),
        (2, "parse", [2], "ValueError"),
        (3, "fetch", [3], "KeyError"),
        (4, "parse", [4], "ValueError"),
    ]
    first = shown[0]
    assert first["error_message"] == "bad input 0"
    assert (first["source_topic"], first["source_partition"], first["source_offset"]) == (queue, 0, 0)
    assert (first["source_consumer_group"], first["source_attempts"]) == (d["group"], 1)
    assert first["key"] == "key-0" and first["replayed"] is False
    assert "error_traceback" not in first
    assert "raise ValueError" in dlq_json("show", d, "--traceback", "--limit", "1")[0]["error_traceback"]

    assert [r["offset"] for r in dlq_json("show", d, "--actor", "fetch")] == [1, 3]
    assert [r["offset"] for r in dlq_json("show", d, "--error-type", "ValueError", "--offsets", "1-")] == [
        2,
        4,
    ]
    assert [r["offset"] for r in dlq_json("show", d, "--offsets", "1-3", "--limit", "2")] == [1, 2]

    code, out, _ = dlq("show", d, "--offsets", "0")
    assert code == 0
    assert "  actor      parse\n" in out and "  args       [0]\n" in out
    assert "  error      ValueError: bad input 0\n" in out
    assert f"  source     {queue} 0/0 (group {d['group']}, 1 attempt)\n" in out
    assert out.endswith("1 dead letter(s) in " + repr(f"{queue}.XQ") + ".\n")


def test_dlq_replay_dry_run_sends_and_commits_nothing(dead_letters: dict[str, Any]) -> None:
    d, queue = dead_letters, dead_letters["queue"]
    report = dlq_json("replay", d, "--dry-run", "--actor", "parse")
    assert (report["replayed"], report["skipped"], report["dry_run"]) == (3, 2, True)
    assert [(r["offset"], r["to"]) for r in report["records"]] == [(0, queue), (2, queue), (4, queue)]
    code, out, _ = dlq("replay", d, "--dry-run")
    assert code == 0 and "Nothing was sent or committed." in out
    assert out.count("would replay ") == 5 and f"would replay 0/3 fetch (KeyError) to {queue!r}\n" in out
    assert record_count(d["bootstrap"], queue) == 5  # the original five only
    assert not any(r["replayed"] for r in dlq_json("show", d))


def test_dlq_replay_sends_the_originals_once(dead_letters: dict[str, Any]) -> None:
    d, queue = dead_letters, dead_letters["queue"]
    originals = {r.offset: r for r in read_topic(d["bootstrap"], queue, count=5)}

    report = dlq_json("replay", d, "--actor", "parse")
    assert (report["replayed"], report["skipped"], report["failed"]) == (3, 2, 0)
    replayed = read_topic(d["bootstrap"], queue, count=8)[5:]
    assert [(r.key, r.value) for r in replayed] == [(originals[n].key, originals[n].value) for n in (0, 2, 4)]
    for record in replayed:
        assert "source_topic" not in record.headers and "error_type" not in record.headers
        assert record.headers["dramatiq_actor"] == b"parse"

    # The same replay again sends nothing: the DLQ group remembers.
    again = dlq_json("replay", d, "--actor", "parse")
    assert (again["replayed"], again["already_replayed"], again["skipped"]) == (0, 3, 2)
    shown = {r["offset"]: r["replayed"] for r in dlq_json("show", d)}
    assert shown == {0: True, 1: False, 2: True, 3: False, 4: True}
    assert [r["offset"] for r in dlq_json("show", d, "--pending")] == [1, 3]

    # Without filters, only what is left goes.
    rest = dlq_json("replay", d)
    assert (rest["replayed"], rest["already_replayed"]) == (2, 3)
    assert [r.headers["dramatiq_actor"] for r in read_topic(d["bootstrap"], queue, count=10)[8:]] == [
        b"fetch",
        b"fetch",
    ]
    done = dlq_json("replay", d)
    assert (done["examined"], done["replayed"], done["already_replayed"]) == (0, 0, 5)
    code, out, _ = dlq("replay", d)
    assert code == 0 and "5 replayed or resolved before" in out
    assert record_count(d["bootstrap"], queue) == 10


def test_dlq_resolve_marks_dead_letters_handled_without_sending_them(dead_letters: dict[str, Any]) -> None:
    d, queue = dead_letters, dead_letters["queue"]
    code, out, _ = dlq("resolve", d, "--error-type", "KeyError", "--dry-run")
    assert code == 0 and "would resolve 0/1 fetch (KeyError)" in out and "Nothing was committed." in out
    assert [r["offset"] for r in dlq_json("show", d, "--pending")] == [0, 1, 2, 3, 4]
    code, out, err = dlq("resolve", d, "--error-type", "KeyError")
    assert code == 0, err
    assert f"Resolved 2 dead letter(s) of '{queue}.XQ' without replaying them; 3 left out" in out
    assert "(replayed or resolved)" in dlq("show", d)[1]
    assert record_count(d["bootstrap"], queue) == 5  # nothing sent
    assert [r["offset"] for r in dlq_json("show", d, "--pending")] == [0, 2, 4]
    # A replay leaves the resolved ones out.
    report = dlq_json("replay", d)
    assert (report["replayed"], report["already_replayed"]) == (3, 2)
    assert dlq_json("resolve", d)["resolved"] == 0


def test_an_unknown_actor_in_a_filter_fails_with_a_suggestion(dead_letters: dict[str, Any]) -> None:
    code, _out, err = dlq("replay", dead_letters, "--actor", "prase")
    assert code == 2
    assert "unknown actor 'prase'" in err and "did you mean 'parse'?" in err


def fake_dead_letters(bootstrap: str, queue: str, count: int, **extra: bytes) -> None:
    """``count`` dead letters in ``{queue}.XQ`` pointing back at ``queue``, as a worker writes them."""
    create_topic(bootstrap, queue, 1)
    create_topic(bootstrap, f"{queue}.XQ", 1)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        headers = [
            ("dramatiq_actor", b"job"),
            ("source_topic", queue.encode()),
            ("source_partition", b"0"),
            ("source_offset", str(i).encode()),
            ("error_type", b"ValueError"),
            *extra.items(),
        ]
        producer.produce(
            f"{queue}.XQ", json.dumps({"actor_name": "job", "args": [i]}).encode(), headers=headers
        )
    producer.flush(10)


def test_ctrl_c_during_a_replay_commits_what_kafka_acknowledged(
    kafka_bootstrap: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, total = unique_name, 540
    fake_dead_letters(kafka_bootstrap, queue, total)
    updates = []

    def interrupt(self: object, done: int, total: int, replayed: int) -> None:
        updates.append(done)
        if done == 92:  # Ctrl-C 92 records in
            raise KeyboardInterrupt

    monkeypatch.setattr("dramatiq_kafka.cli.ProgressBar.update", interrupt)
    code, _out, err = run("dlq", "replay", queue, "-b", kafka_bootstrap)
    assert code == 130, err
    assert "interrupted after 92 dead letter(s) examined" in err
    assert "the 92 acknowledged are committed and will not be sent again" in err
    assert record_count(kafka_bootstrap, queue) == 92
    monkeypatch.undo()

    rest = json.loads(run("dlq", "replay", queue, "-b", kafka_bootstrap, "--json")[1])
    assert (rest["replayed"], rest["already_replayed"]) == (total - 92, 92)
    assert record_count(kafka_bootstrap, queue) == total  # nothing sent twice


def test_a_shrunk_dead_letter_is_not_replayed_empty_unless_asked(
    kafka_bootstrap: str, unique_name: str
) -> None:
    queue = unique_name
    omitted = b"value of 2000123 bytes: the whole record was refused (too large); the original stays at q/0@7"
    fake_dead_letters(kafka_bootstrap, queue, 1, dead_letter_omitted=omitted)
    code, _, err = run("dlq", "replay", queue, "-b", kafka_bootstrap)
    assert code == 1
    assert "not replayed, the dead letter lacks its value of 2000123 bytes" in err
    assert "--send-omitted sends it as it is" in err
    assert record_count(kafka_bootstrap, queue) == 0
    code, _, err = run("dlq", "replay", queue, "-b", kafka_bootstrap, "--send-omitted")
    assert code == 0, err
    assert record_count(kafka_bootstrap, queue) == 1


def test_dlq_replay_to_another_queue_with_a_progress_bar(dead_letters: dict[str, Any]) -> None:
    d, queue = dead_letters, dead_letters["queue"]
    code, out, err = dlq("replay", d, "--to", f"{queue}-other", "--error-type", "KeyError", "--progress")
    assert code == 0, err
    assert f"Replayed 2 dead letter(s) of '{queue}.XQ' to '{queue}-other'" in out
    assert "] 100% 5/5 examined, 2 replayed" in err and err.startswith(f"\rReplaying {queue}.XQ [")
    moved = read_topic(d["bootstrap"], f"{queue}-other", count=2)
    assert sorted(json.loads(r.value or b"")["args"][0] for r in moved) == [1, 3]
    assert record_count(d["bootstrap"], queue) == 5


def test_dlq_of_a_missing_topic(kafka_bootstrap: str, unique_name: str) -> None:
    code, _, err = run("dlq", "show", unique_name, "-b", kafka_bootstrap)
    assert code == 1
    assert f"The dead-letter topic '{unique_name}.XQ' does not exist." in err


def test_console_script_runs_against_kafka(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name, 2)
    env = {**os.environ, "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = subprocess.run(
        [CLI, "lag", unique_name, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 0


def test_dlq_replay_commits_only_what_kafka_acknowledged(dead_letters: dict[str, Any]) -> None:
    d, queue = dead_letters, dead_letters["queue"]
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": d["bootstrap"]})
    tiny = NewTopic(f"{queue}-tiny", 1, 1, config={"max.message.bytes": "50"})  # refuses every batch
    admin.create_topics([tiny])[f"{queue}-tiny"].result(10)

    code, out, err = dlq("replay", d, "--to", f"{queue}-tiny", "--actor", "fetch")
    assert code == 1
    assert "Replayed 0 dead letter(s)" in out and "2 failed" in out
    assert "error: 0/1: " in err and "error: 0/3: " in err and "too large" in err
    # Nothing was committed: every dead letter is still there to replay.
    assert [r["offset"] for r in dlq_json("show", d, "--pending")] == [0, 1, 2, 3, 4]
    assert dlq_json("replay", d)["replayed"] == 5


def test_dlq_show_of_a_record_that_is_no_job(kafka_bootstrap: str, unique_name: str) -> None:
    queue = unique_name
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={queue: QueueConfig(partitions=1)},
    )
    dramatiq.set_broker(broker)
    dramatiq.actor(lambda: None, actor_name="noop", queue_name=queue)
    broker.ensure_topics(queue)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(queue, b"not json", b"k")  # written by some other service
    producer.flush(10)
    run_worker(broker, queue)
    broker.close()

    code, out, _ = run("dlq", "show", queue, "-b", kafka_bootstrap, "--error-type", "Undeliverable")
    assert code == 0
    assert "  value      not json\n" in out and "  key        k\n" in out
    assert "  error      Undeliverable: The record value is not JSON" in out
    assert "  actor" not in out
    assert run_json("dlq", "show", queue, "-b", kafka_bootstrap, "--error-type", "ValueError") == []
