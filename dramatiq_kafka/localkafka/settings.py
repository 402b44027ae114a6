"""The local Kafka's settings: versions, paths, timeouts, the JVM's flags, the SASL user of the command.

``KAFKA_VERSION`` is set here and nowhere else (the pom gets it as ``-Dkafka.version``, the jar cache
dir is named after it); ``$DRAMATIQ_KAFKA_VERSION`` runs another (the tests, the demo, the
benchmarks).  The broker's own configuration (``server.properties``) is in
``properties.py``; the jar dir in use, ``LIBS_DIR``, is on the package (``__init__.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The Apache Kafka release the local Kafka runs: 4.2 or later for share groups (KIP-932).
DEFAULT_KAFKA_VERSION = "4.4.0"
VERSION_ENV = "DRAMATIQ_KAFKA_VERSION"
KAFKA_VERSION = os.environ.get(VERSION_ENV) or DEFAULT_KAFKA_VERSION
SCALA_VERSION = "2.13"
# Beside the package, in dramatiq_kafka/ (shipped as package data).
POM = Path(__file__).resolve().parent.parent / "kafka-pom.xml"
LIBS_ENV = "DRAMATIQ_KAFKA_LIBS"

HOST = "127.0.0.1"
READY_LINE = b"Kafka Server started"
START_ATTEMPTS = 3
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
TAIL_LINES = 40
POLL_INTERVAL = 0.1

SASL_MECHANISM = "SCRAM-SHA-512"
CLI_SASL_USERS = {"alice": "alice-secret"}

# Serial GC and C1 only: measured on 2 cores, JVM launch to ready took 1.7 s instead of 2.0 s (G1 flags of
# kafka-server-start.sh) for one node and 3.8 s instead of 5.7 s for 3 nodes, whose C2 compiler threads
# otherwise fight over the cores. Peak throughput does not matter for a test broker.
JVM_FLAGS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
# StorageTool is a short-lived Scala CLI; the tools' default heap is plenty.
FORMAT_JVM_FLAGS: tuple[str, ...] = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
