"""Dramatiq's own behavioural tests against a KafkaBroker (``make dramatiq-suite``).

``fetch.py`` lays out the tests of the installed Dramatiq; ``plugin.py`` holds the fixtures
that make its ``stub_broker`` a ``KafkaBroker`` and applies the two lists beside it:
``cannot_hold.toml`` (tests no Kafka broker can pass, each with its reason) and
``known_failing.toml`` (tests that fail for a reason this project can fix, not fixed yet).
"""
