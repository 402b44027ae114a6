"""Scenario 11: a bad network between the clients and Kafka, through ``integration/netproxy.py``.

The module's own node advertises the proxy's port, so every connection of
the producers and the worker goes through it.  In turn: 200 ms added each
way, every connection cut every few seconds, and a black hole longer than
the session timeout; then the network heals.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dramatiq_kafka import localkafka
from integration.conftest import App
from integration.faults import Result, Traffic, drain_traffic, first_done_after, record
from integration.netproxy import NetProxy
from integration.workers import ledger, ledger_times
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.faults]

SESSION_MS = 10_000
LATENCY = 0.2
LATENCY_SECONDS = 10
CUT_EVERY = 3.0
CUTS = 4
BLACK_HOLE_SECONDS = 15
RATE = 30  # jobs per second and sender
#: As scenario 2: one consumer's window.
REPEAT_WINDOW = 2 * 16 + 100


@pytest.fixture(scope="module")
def proxied_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, NetProxy]]:
    cluster = localkafka.start_single(tmp_path_factory.mktemp("proxied-kafka"))
    [node] = cluster.nodes
    proxy = NetProxy(node.broker_port).start()
    try:
        # Advertise the proxy: clients reconnect to what the node advertises.
        node.stop()
        config = node.config_path.read_text()
        config = re.sub(
            r"^advertised\.listeners=.*$",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{proxy.port}",
            config,
            flags=re.MULTILINE,
        )
        node.config_path.write_text(config)
        node.start()
        node.wait_ready()
        yield cluster, proxy
    finally:
        proxy.stop()
        cluster.stop()


@pytest.mark.timeout(900)
def test_a_bad_network_loses_no_job(
    proxied_kafka: tuple[Any, NetProxy], make_app: Callable[..., App]
) -> None:
    _, proxy = proxied_kafka
    app = make_app(6, bootstrap=f"127.0.0.1:{proxy.port}")
    app.send(100)
    worker = app.start_worker(threads=8, consumer_config={"session.timeout.ms": SESSION_MS})
    wait_for(lambda: len(ledger(app.ledger_dir)) >= 100, timeout=90)
    senders = [Traffic(app, RATE, "sync", 1_000_000), Traffic(app, RATE, "async", 2_000_000)]
    for sender in senders:
        sender.start()
    time.sleep(3)
    proxy.latency = LATENCY
    time.sleep(LATENCY_SECONDS)
    proxy.latency = 0.0
    cut = 0
    for _ in range(CUTS):
        cut += proxy.cut()
        time.sleep(CUT_EVERY)
    proxy.black_hole = True
    holed = time.time()
    time.sleep(BLACK_HOLE_SECONDS)
    proxy.black_hole = False
    healed = time.time()
    time.sleep(10)
    counted = drain_traffic(app, senders, worker, async_sender=senders[1], sent_before=100)
    after = [job for s in senders for job, at in s.sent_at.items() if at >= healed]
    recovery = first_done_after(app.ledger_dir, healed, after)
    end = healed + (recovery or 0.0)
    while_holed = sum(1 for _, _, _, at in ledger_times(app.ledger_dir) if holed <= at <= end)
    bound = while_holed + 2 * REPEAT_WINDOW  # the cuts' rebalances, and the black hole's
    sync, asynchronous = senders
    record(
        Result(
            scenario="11-bad-network",
            title="a bad network between the clients and Kafka (TCP proxy)",
            fault=f"{LATENCY * 1000:.0f} ms each way for {LATENCY_SECONDS} s, every connection cut every "
            f"{CUT_EVERY:g} s ({CUTS} times, {cut} connections), a black hole for {BLACK_HOLE_SECONDS} s "
            f"(session.timeout.ms {SESSION_MS // 1000} s), then healed; {RATE} sync and {RATE} async "
            "jobs/s, one worker, 6 partitions",
            count=counted,
            duplicate_bound=bound,
            recovery_seconds=None if recovery is None else round(recovery, 1),
            notes=f"sync: {len(sync.sent_at)} acknowledged, {len(sync.failed)} raised; async: "
            f"{len(asynchronous.sent_at)} delivered, {len(asynchronous.failed)} reported failed by "
            f"flush_producer(); {counted.unconfirmed} of all failed ran anyway (Kafka had them); "
            "recovery: from the heal to the first run of a job sent after it",
        )
    )
    assert counted.lost == [], "acknowledged jobs were lost"
    assert counted.duplicates <= bound
    assert recovery is not None, "no job sent after the heal ran"
    reasons = [reason for s in senders for reason in s.failed.values()]
    assert all(reason.startswith(("DeliveryTimeout", "DeliveryError")) for reason in reasons), reasons
