"""The dashboard in a real headless Chromium (Debian's `chromium`), against a real Kafka and worker."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker

from dramatiq_kafka import KafkaBroker
from dramatiq_kafka.web import make_app

from .helpers import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str) -> str:
    """The page's DOM after Chromium loaded it."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_chromium_shows_what_kafka_says(kafka_bootstrap: str, unique_name: str) -> None:
    prefix = f"{unique_name}."
    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=prefix,
        status_interval=0.5,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work", max_retries=5, min_backoff=60_000, max_backoff=60_000)
    def fails() -> None:
        raise ValueError("no")

    fails.send()
    broker.flush_producer()

    server, base = serve_in_thread(make_app(broker, cache_seconds=0, sample_every=None))
    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: "waits for retry 1" in browse(f"{base}/queue/work"), 60, 1)
        overview = browse(f"{base}/")
        lags = broker.admin.lag(f"{prefix}work")
        row = re.search(r'<a href="queue/work">work</a></td>(.*?)</tr>', overview)
        assert row is not None
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[:4] == [
            str(len(lags)),
            str(sum(p.end for p in lags)),
            str(sum(p.lag for p in lags)),
            "1",
        ]
        assert "work/" in browse(f"{base}/workers")
    finally:
        worker.stop()
        server.shutdown()
        broker.close()


CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
def test_a_replay_from_the_page_in_chromium(kafka_bootstrap: str, unique_name: str) -> None:
    """A real browser's form post (its Origin and Sec-Fetch-Site headers) is let through with
    the token, and sends the dead letter back; a wrong token is refused."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from dramatiq_kafka import DeadLetter, QueueConfig

    from .helpers import record_count, run_worker

    broker = KafkaBroker(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique_name}",
        topic_prefix=f"{unique_name}.",
        queues={"work": QueueConfig(partitions=1, dead_letter=DeadLetter(max_retries=0))},
        status_interval=None,
    )
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="work")
    def fails(n: int) -> None:
        raise ValueError(f"no {n}")

    for n in range(2):
        fails.send(n)
    run_worker(broker, "work", fail_fast=False)
    source = f"{unique_name}.work"
    before = record_count(kafka_bootstrap, source)
    server, base = serve_in_thread(make_app(broker, cache_seconds=0, token="page-token", sample_every=None))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"{base}/dead-letters/work")
        boxes = driver.find_elements(By.CSS_SELECTOR, "input[name=pick]")
        assert len(boxes) == 2
        boxes[0].click()
        picked = driver.find_element(By.ID, "picked")
        picked.find_element(By.NAME, "token").send_keys("wrong")
        submit(driver, picked.find_element(By.CSS_SELECTOR, "button[value=replay]"))
        assert "Wrong or missing token" in driver.page_source
        driver.get(f"{base}/dead-letters/work")
        driver.find_elements(By.CSS_SELECTOR, "input[name=pick]")[0].click()
        picked = driver.find_element(By.ID, "picked")
        picked.find_element(By.NAME, "token").send_keys("page-token")
        submit(driver, picked.find_element(By.CSS_SELECTOR, "button[value=replay]"))
        assert "Replayed 1 dead letter(s)" in driver.page_source, driver.page_source
        # The browser was sent to the result's page (a GET: reloading it posts nothing).
        assert "/dead-letters/work/done/" in driver.current_url
        driver.refresh()
        assert record_count(kafka_bootstrap, source) == before + 1
        # Links are relative to the page's <base>: they lead where they say.
        driver.find_element(By.LINK_TEXT, "back to the dead letters").click()
        assert driver.current_url == f"{base}/dead-letters/work"
        driver.find_element(By.LINK_TEXT, "Overview").click()
        assert driver.current_url == f"{base}/"
    finally:
        driver.quit()
        server.shutdown()
        broker.close()


def submit(driver: Any, button: Any) -> None:
    """Click a form's button and wait for the page it posts to."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    button.click()
    WebDriverWait(driver, 20).until(expected_conditions.staleness_of(button))


def serve_in_thread(app: object) -> tuple[Any, str]:
    """Serve ``app`` on a free loopback port; the server and its base URL."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = make_server("127.0.0.1", port, app, handler_class=Quiet)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{port}"
