"""Fixtures of the whole-system tests: the app's queue and its CLI workers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dramatiq_kafka import KafkaBroker, QueueConfig
from integration.workers import CliWorker
from tests.helpers import committed_and_end


class App:
    """The test's side of ``integration/app.py``: same group, same queue."""

    def __init__(
        self,
        bootstrap: str,
        name: str,
        ledger_dir: Path,
        log_dir: Path,
        partitions: int,
        config: dict[str, Any] | None = None,
        **env: str,
    ) -> None:
        self.queue = name
        self.group = f"group-{name}"
        self.ledger_dir = ledger_dir
        self.log_dir = log_dir
        self.env = {
            "DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "APP_GROUP": self.group,
            "APP_QUEUE": name,
            "APP_PARTITIONS": str(partitions),
            "APP_LEDGER": str(ledger_dir),
            "APP_CLIENT_CONFIG": json.dumps(config or {}),
            **env,
        }
        self.config = dict(config or {})
        self.broker = KafkaBroker(
            bootstrap_servers=bootstrap,
            config=self.config,
            group_id=self.group,
            queues={name: QueueConfig(partitions=partitions)},
        )
        dramatiq.set_broker(self.broker)
        # Stand-ins with the worker's actor names: here they only send.
        self.work = dramatiq.actor(lambda job_id, seconds=0.0: None, actor_name="work", queue_name=name)
        self.patient = dramatiq.actor(lambda job_id, seconds: None, actor_name="patient", queue_name=name)
        self.failing = dramatiq.actor(lambda job_id: None, actor_name="failing", queue_name=name)
        self.timed = dramatiq.actor(lambda job_id, due: None, actor_name="timed", queue_name=name)
        self.chaotic = dramatiq.actor(lambda job_id, kind: None, actor_name="chaotic", queue_name=name)
        self.stepped = dramatiq.actor(
            lambda job_id, items, seconds: None, actor_name="stepped", queue_name=name
        )
        self.workers: list[CliWorker] = []

    def send(self, count: int, seconds: float = 0.0, start: int = 0) -> None:
        for job_id in range(start, start + count):
            self.work.send(job_id, seconds)
        self.broker.flush_producer()

    def start_worker(self, *, threads: int = 8, consumer_config: dict[str, Any] | None = None) -> CliWorker:
        env = dict(self.env)
        if consumer_config:
            env["APP_CONSUMER_CONFIG"] = json.dumps(consumer_config)
        worker = CliWorker(env, self.log_dir / f"worker-{len(self.workers)}.log", threads=threads)
        self.workers.append(worker)
        return worker

    def committed_and_end(self) -> tuple[dict[int, int], dict[int, int]]:
        return committed_and_end(self.broker.bootstrap_servers, self.group, self.queue, self.config)


@pytest.fixture
def make_app(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``make_app(partitions, *, bootstrap=..., config=..., **env)``: the app's queue, group
    and ledger for this test; on the session's Kafka unless ``bootstrap`` names another."""
    apps: list[App] = []

    def make(
        partitions: int = 12,
        *,
        bootstrap: str | None = None,
        config: dict[str, Any] | None = None,
        **env: str,
    ) -> App:
        (tmp_path / "ledger").mkdir()
        apps.append(
            App(
                bootstrap or kafka_bootstrap,
                unique_name,
                tmp_path / "ledger",
                tmp_path,
                partitions,
                config,
                **env,
            )
        )
        return apps[-1]

    yield make
    for app in apps:
        for worker in app.workers:
            if worker.process.poll() is None:
                worker.kill()
        app.broker.close()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app(12)
