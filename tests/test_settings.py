"""Broker settings as a Django project writes them, and librdkafka settings per client."""

from __future__ import annotations

import logging

import dramatiq
import pytest

from dramatiq_kafka import ConfigurationError, DeadLetter, KafkaBroker, QueueConfig
from tests.helpers import read_topic, run_worker

# What django_dramatiq's DRAMATIQ_BROKER["OPTIONS"] holds: plain values only.
DJANGO_OPTIONS = {
    "group_id": "django",
    "queues": {"emails": {"partitions": 3, "dead_letter": {"max_retries": 0, "topic": "emails-dead"}}},
    "default_queue": {"partitions": 2, "topic_config": {"retention.ms": 86_400_000}},
    "dead_letter": {"max_retries": 5},
}


def test_plain_dicts_stand_for_queue_config_and_dead_letter() -> None:
    broker = KafkaBroker(**DJANGO_OPTIONS)  # type: ignore[arg-type]
    try:
        assert broker.queue_config("emails") == QueueConfig(
            partitions=3, dead_letter=DeadLetter(topic="emails-dead", max_retries=0)
        )
        assert broker.queue_config("other") == QueueConfig(
            partitions=2, topic_config={"retention.ms": "86400000"}
        )
        assert broker.dead_letter_for("other") == DeadLetter(max_retries=5)
        assert broker.dead_letter_topic("emails") == "emails-dead"
    finally:
        broker.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queues": {"emails": {"partitions": "12"}}}, "queues['emails']: QueueConfig(partitions='12')"),
        (
            {"queues": {"emails": {"partition": 12}}},
            "queues['emails']: unknown QueueConfig setting(s) 'partition'",
        ),
        ({"queues": {"emails": 12}}, "queues['emails']=12: must be a QueueConfig or a dict"),
        ({"queues": ["emails"]}, "KafkaBroker(queues=['emails']): must be a dict"),
        ({"default_queue": {"ordered": "yes"}}, "default_queue: QueueConfig(ordered='yes')"),
        ({"default_queue": {"min_backoff": "1000"}}, "default_queue: QueueConfig(min_backoff='1000')"),
        (
            {"default_queue": {"dispatch_method": "later"}},
            "default_queue: QueueConfig: dispatch_method='later'",
        ),
        (
            {"default_queue": {"topic_config": {"retention.ms": [1]}}},
            "default_queue: QueueConfig(topic_config)",
        ),
        ({"dead_letter": {"max_retries": "3"}}, "dead_letter: DeadLetter(max_retries='3')"),
        ({"dead_letter": {"independent": 1}}, "dead_letter: DeadLetter(independent=1)"),
        (
            {"dead_letter": "dead"},
            "dead_letter='dead': must be a DeadLetter, a dict of its settings, or None",
        ),
        (
            {"queues": {"q": {"dead_letter": {"topic": 5}}}},
            "queues['q']: QueueConfig(dead_letter): DeadLetter(topic=5)",
        ),
        ({"group_id": 7}, "KafkaBroker(group_id=7): must be a string"),
        ({"create_topics": "false"}, "KafkaBroker(create_topics='false'): must be True or False"),
        ({"request_timeout": "10"}, "KafkaBroker(request_timeout='10'): must be a positive number"),
        ({"config": {"linger.ms": 5, 1: 2}}, "KafkaBroker(config): the setting name 1 is not a string"),
    ],
)
def test_a_wrong_type_fails_at_construction_naming_the_key(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        KafkaBroker(**options)  # type: ignore[arg-type]
    assert message in str(error.value)


def test_plain_settings_work_end_to_end(kafka_bootstrap: str, unique_name: str) -> None:
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        queues={unique_name: {"partitions": 3, "dead_letter": {"max_retries": 0}}},
        fail_fast_default=False,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=unique_name)
    def fail() -> None:
        raise RuntimeError("no")

    fail.send()
    run_worker(broker, unique_name)
    broker.close()
    # max_retries=0 from the dict: dead-lettered at the first failure, in a 3-partition topic.
    (dead,) = read_topic(kafka_bootstrap, f"{unique_name}.XQ", count=1)
    assert dead.headers["source_attempts"] == b"1"


def test_client_specific_settings_in_config_raise_no_confwarn(
    kafka_bootstrap: str,
    unique_name: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{unique_name}",
        # Consumer-only, producer-only and shared settings, all in `config`.
        config={"session.timeout.ms": 12_000, "fetch.wait.max.ms": 50, "linger.ms": 2, "client.id": "mine"},
        fail_fast_default=False,
    )
    dramatiq.set_broker(broker)
    done = []

    @dramatiq.actor(queue_name=unique_name, dispatch_method="sync")
    def job() -> None:
        done.append(1)

    job.send()
    run_worker(broker, unique_name)  # a consumer, the producer and the admin client were all made
    broker.flush_producer()
    broker.close()

    assert done == [1]
    logged = [record.getMessage() for record in caplog.records]
    assert not [line for line in logged if "CONFWARN" in line], logged
    assert "CONFWARN" not in capfd.readouterr().err
    # Each setting reached the clients it applies to.
    assert broker.consumer_config["session.timeout.ms"] == 12_000
    assert "session.timeout.ms" not in broker.producer.config
    assert broker.producer.config["linger.ms"] == 2
    assert "linger.ms" not in broker.consumer_config
    assert broker.producer.config["client.id"] == broker.consumer_config["client.id"] == "mine"


@pytest.mark.parametrize("where", ["config", "consumer_config"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("session.timeout.ms", 12_000),
        ("heartbeat.interval.ms", 1_000),
        ("partition.assignment.strategy", "range"),
    ],
)
def test_a_classic_only_setting_with_kip_848_fails_at_construction(
    where: str, name: str, value: object
) -> None:
    # librdkafka refuses these only when a worker creates its consumer, long after the
    # broker was declared.
    settings = {"group.protocol": "consumer", name: value}
    with pytest.raises(ConfigurationError) as error:
        KafkaBroker(**{where: settings})  # type: ignore[arg-type]
    assert str(error.value).startswith(
        f"KafkaBroker({where}): {name!r} does not apply with group.protocol='consumer'"
    )
