"""A resumable job: named steps, a cursor, and a checkpoint per item.

Run a worker with ``dramatiq examples.continuation.tasks`` and enqueue with
``python -m examples.continuation.enqueue``.  Stop the worker (Ctrl-C)
while it imports: the job stops after the current row, goes back to Kafka
with its progress, and the next worker skips the download and continues at
the next row, 2 s later (``resume_delay``).
"""

from __future__ import annotations

import logging
import time

import dramatiq

from dramatiq_kafka import KafkaBroker, QueueConfig
from dramatiq_kafka.continuation import Continuation, Step, continuable

broker = KafkaBroker(group_id="continuation-example", queues={"imports": QueueConfig(partitions=1)})
dramatiq.set_broker(broker)

logger = logging.getLogger("examples.continuation")


@dramatiq.actor(queue_name="imports")
@continuable(resume_delay=2000)
def import_file(job: Continuation, name: str, rows: int) -> None:
    if job.resumed:
        logger.warning("Resuming %s: %s already done.", name, ", ".join(job.progress.finished) or "nothing")
    job.step("download", download, name)
    job.step("rows", import_rows, name, rows)
    job.step("notify", lambda step: logger.warning("%s imported.", name))


def download(step: Step, name: str) -> None:
    logger.warning("Downloading %s.", name)


def import_rows(step: Step, name: str, rows: int) -> None:
    for row in range(step.cursor or 0, rows):
        logger.warning("%s: row %d.", name, row)
        time.sleep(0.2)
        step.advance(row + 1)  # the job may stop here; it resumes at row + 1
