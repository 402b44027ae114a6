"""Scenario 13: TLS. `dramatiq` workers over the SSL and the SASL_SSL listener of a node whose
certificate comes from a CA the test makes; every job counted. The refused certificates (another
CA, an expired one), the command over SSL and the secrets are ``tests/test_tls.py``'s."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from integration.conftest import App
from integration.faults import Result, count, record
from tests.helpers import wait_for
from tests.test_tls import TlsKafka, tls  # noqa: F401  (the module's TLS node)

pytestmark = [pytest.mark.slow, pytest.mark.faults]

JOBS = 1000


@pytest.mark.parametrize("user", [None, "alice"], ids=["SSL", "SASL_SSL"])
def test_workers_over_tls_run_every_job_once(
    tls: TlsKafka,  # noqa: F811
    make_app: Callable[..., App],
    user: str | None,
) -> None:
    servers, config = tls.config(user)
    protocol = config["security.protocol"]
    app = make_app(12, bootstrap=servers, config=config)
    first, second = app.start_worker(threads=8), app.start_worker(threads=8)
    wait_for(lambda: first.assigned(app.queue) and second.assigned(app.queue), timeout=60)
    app.send(JOBS, seconds=0.002)
    app.broker.join(app.queue, timeout=120_000)
    assert first.terminate() == 0, first.output()
    assert second.terminate() == 0, second.output()

    counted = count(app.ledger_dir, range(JOBS))
    record(
        Result(
            scenario=f"13-tls-{protocol.lower()}",
            title="TLS listeners (a CA made by the test)",
            fault=f"{protocol}: 2 worker processes of 8 threads, {JOBS} jobs; refused certificates: "
            "`tests/test_tls.py`",
            count=counted,
            duplicate_bound=0,
            notes="another CA and an expired certificate fail a send, the command and a worker "
            "at boot within 5 s with TLSHandshakeError naming the cause (`docs/security.md`)",
        )
    )
    assert counted.lost == [] and counted.duplicates == 0
    committed, ends = app.committed_and_end()
    assert committed == ends
