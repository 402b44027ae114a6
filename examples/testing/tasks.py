"""The application under test: a word counter.  Its broker is made at import,
as in any app; the plugin has set $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS by then."""

from __future__ import annotations

import dramatiq

from dramatiq_kafka import KafkaBroker, QueueConfig

broker = KafkaBroker(group_id="testing-example", queues={"words": QueueConfig(partitions=3)})
dramatiq.set_broker(broker)

#: Where the jobs put their results (a database in a real app).
COUNTS: dict[str, int] = {}


@dramatiq.actor(queue_name="words", max_retries=0)
def count_words(document_id: str, text: str) -> None:
    if not text.strip():
        raise ValueError(f"document {document_id!r} is empty")
    COUNTS[document_id] = len(text.split())
