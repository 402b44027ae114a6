"""A Django project's jobs on Kafka, configured only through ``settings.DRAMATIQ_BROKER``.

In a real project ``python manage.py rundramatiq`` runs the workers; here, as for the
other examples, ``dramatiq examples.django_app.tasks`` does: importing this module sets
Django up, and django_dramatiq builds the ``KafkaBroker`` from the settings.  Enqueue
with ``python -m examples.django_app.enqueue``.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

import django

django.setup()  # django_dramatiq's app config sets the broker from DRAMATIQ_BROKER

import dramatiq  # noqa: E402

logger = logging.getLogger("examples.django_app")
broker = dramatiq.get_broker()


@dramatiq.actor(queue_name="emails")
def send_welcome(address: str) -> None:
    if "@" not in address:
        raise ValueError(f"{address!r} is not an address")  # dead-lettered at once: max_retries 0
    logger.warning("welcome mail to %s", address)


@dramatiq.actor
def count_signups(n: int) -> None:
    logger.warning("%d signups today", n)
