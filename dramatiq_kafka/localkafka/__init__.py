"""Fetch, start and stop a local Apache Kafka (KRaft) on 127.0.0.1, without Docker.

The broker runs from the jars that Maven fetches with ``dramatiq_kafka/kafka-pom.xml`` (cached per
Kafka version), as one or several combined broker+controller JVMs on free loopback ports.  It ships in
the wheel, so an installed package can start a Kafka for its user's tests (``dramatiq_kafka.testing``).

Module use (tests)::

    from dramatiq_kafka import localkafka

    with localkafka.start_single() as kafka:  # or start_cluster(3), start_single(sasl_users={...})
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})

    # SSL (and SASL_SSL) listeners, from a PEM keystore the caller made (tests/certificates.py):
    with localkafka.start_single(sasl_users=users, tls=localkafka.TlsKeystores(Path("node.pem"))) as kafka:
        producer = Producer(kafka.client_config("alice", ca_location="ca.pem"))

Command line::

    python -m dramatiq_kafka.localkafka fetch
    python -m dramatiq_kafka.localkafka start [single|cluster|sasl] --dir DIR [--timeout S]
    python -m dramatiq_kafka.localkafka status --dir DIR
    python -m dramatiq_kafka.localkafka stop --dir DIR

Only the standard library is used, and the modules import each other relatively, so that
``scripts/localkafka.py`` can load this package by path (without ``dramatiq_kafka/__init__.py``,
which needs confluent-kafka) before any virtualenv exists.

A JVM started through the module API dies with the Python process that started it: it gets
``PR_SET_PDEATHSIG=SIGKILL`` (covers ``kill -9`` of Python) and an ``atexit`` handler stops it on a normal
exit. The kernel sends that signal when the *thread* that forked the JVM exits, not the process, so call
``start_single``/``start_cluster``/``KafkaNode.start`` from a long-lived thread (normally the main thread).
JVMs started by the ``start`` command outlive it on purpose; ``stop --dir DIR`` ends them by PID.

One module per job: ``settings.py`` (``KAFKA_VERSION``, paths, timeouts, JVM flags),
``properties.py`` (the nodes' ``server.properties`` and ``log4j2.properties``), ``errors.py`` (the
error tree under ``LocalKafkaError``), ``keystores.py`` (``TlsKeystores``), ``system.py`` (free
ports, children that die with their parent), ``jars.py`` (the jar cache, fetching it with Maven),
``tools.py`` (``java`` and ``mvn``: ``check_tools``), ``node.py`` (``KafkaNode``: one JVM),
``nodes.py`` (several nodes at once, the stop at exit), ``cluster.py`` (``KafkaCluster``,
``start_single``, ``start_cluster``, ``launch``), ``command.py`` (the command line and its
``state.json``; ``__main__.py`` runs it).  Everything is importable from here, as
``localkafka.NAME``.
"""

from .cluster import KafkaCluster, launch, new_cluster_id, start_cluster, start_single
from .command import cli_fetch, cli_start, cli_status, cli_stop, main, parse_args
from .errors import KafkaExitedError, KafkaFetchError, KafkaStartError, LocalKafkaError
from .jars import default_libs_dir, fetch_jars, jars_present
from .keystores import TlsKeystores
from .node import KafkaNode
from .nodes import format_nodes, stop_nodes, wait_nodes_ready
from .properties import (
    FAST_FENCING_PROPERTIES,
    LOG4J2_PROPERTIES,
    SASL_PROPERTIES,
    SINGLE_NODE_PROPERTIES,
    TLS_PROPERTIES,
    cluster_properties_for,
)
from .settings import (
    CLI_SASL_USERS,
    FORMAT_JVM_FLAGS,
    HOST,
    JVM_FLAGS,
    KAFKA_VERSION,
    LIBS_ENV,
    POLL_INTERVAL,
    POM,
    READY_LINE,
    SASL_MECHANISM,
    SCALA_VERSION,
    START_ATTEMPTS,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TAIL_LINES,
)
from .system import free_ports, port_open
from .tools import check_tools, java_executable

#: The jar dir used when none is given.  It lives here, on the package, and is read at each call
#: (``jars._libs_dir``), so that setting ``localkafka.LIBS_DIR`` reaches ``fetch_jars``,
#: ``check_tools`` and ``KafkaNode``.
LIBS_DIR = default_libs_dir()

# Raised to the package's callers under its name, as when it was one module (tracebacks, pickles,
# tests/test_layout.py), not under the module that defines them.
for _error in (LocalKafkaError, KafkaFetchError, KafkaStartError, KafkaExitedError):
    _error.__module__ = __name__
del _error

__all__ = [
    "CLI_SASL_USERS",
    "FAST_FENCING_PROPERTIES",
    "FORMAT_JVM_FLAGS",
    "HOST",
    "JVM_FLAGS",
    "KAFKA_VERSION",
    "LIBS_DIR",
    "LIBS_ENV",
    "LOG4J2_PROPERTIES",
    "POLL_INTERVAL",
    "POM",
    "READY_LINE",
    "SASL_MECHANISM",
    "SASL_PROPERTIES",
    "SCALA_VERSION",
    "SINGLE_NODE_PROPERTIES",
    "START_ATTEMPTS",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "TAIL_LINES",
    "TLS_PROPERTIES",
    "KafkaCluster",
    "KafkaExitedError",
    "KafkaFetchError",
    "KafkaNode",
    "KafkaStartError",
    "LocalKafkaError",
    "TlsKeystores",
    "check_tools",
    "cli_fetch",
    "cli_start",
    "cli_status",
    "cli_stop",
    "cluster_properties_for",
    "default_libs_dir",
    "fetch_jars",
    "format_nodes",
    "free_ports",
    "jars_present",
    "java_executable",
    "launch",
    "main",
    "new_cluster_id",
    "parse_args",
    "port_open",
    "start_cluster",
    "start_single",
    "stop_nodes",
    "wait_nodes_ready",
]
