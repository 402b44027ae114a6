"""Django settings of the example: the broker is named by its class and plain options.

This is what a Django project holds in ``settings.py`` for django_dramatiq: no
``QueueConfig`` or ``DeadLetter`` objects, only dicts, strings and numbers (they
could come from environment variables or a YAML file).  ``KafkaBroker`` turns the
dicts into its settings and checks every value when the app starts.
"""

from __future__ import annotations

import os

SECRET_KEY = "example-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django_dramatiq", "examples.django_app"]
# No database: the jobs below do not use one (DbConnectionsMiddleware is then a no-op).
DATABASES: dict[str, dict[str, str]] = {}

DRAMATIQ_BROKER = {
    "BROKER": "dramatiq_kafka.KafkaBroker",
    "OPTIONS": {
        "bootstrap_servers": os.environ.get("DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        "group_id": "django-example",
        "queues": {
            "emails": {"partitions": 3, "dead_letter": {"max_retries": 0, "topic": "emails.dead"}},
        },
        "default_queue": {"partitions": 2, "topic_config": {"retention.ms": 86_400_000}},
        "dead_letter": {"max_retries": 2},
        # A consumer-only librdkafka setting in `config` reaches the consumers only.
        "config": {"session.timeout.ms": 30_000},
    },
    # KafkaBroker retries in place: Dramatiq's Retries is not listed.
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_TASKS_MODULE = "tasks"
