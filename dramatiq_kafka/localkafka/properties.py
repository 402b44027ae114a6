"""The nodes' configuration files: ``server.properties`` settings and ``log4j2.properties``.

The settings of one node, of a cluster's nodes (``cluster_properties_for``), of SASL and TLS
listeners, and how a properties file is written.  A node's own settings (its id, listeners and
dirs) are made by ``KafkaNode.server_properties`` in ``node.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .settings import HOST, SASL_MECHANISM

LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

_PROTOCOL_MAP = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"

# Settings for one node; the internal topics get 3 partitions instead of 50 so the first group join and the
# first transaction are fast.
SINGLE_NODE_PROPERTIES: dict[str, str] = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": _PROTOCOL_MAP,
    "auto.create.topics.enable": "true",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "3",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # Lets a share group lend records for as little as a second (default minimum 15 s), so
    # that tests of jobs outliving their lock take seconds.
    "group.share.min.record.lock.duration.ms": "1000",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    # The default (128 MiB) would take a quarter of the heap.
    "log.cleaner.dedupe.buffer.size": "16777216",
}

# Fault tests need a killed broker fenced quickly (defaults: 2000 / 9000 ms).
FAST_FENCING_PROPERTIES: dict[str, str] = {
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
}

# A SCRAM server needs no user in its JAAS entry, but the entry itself is mandatory.
SASL_PROPERTIES: dict[str, str] = {
    "sasl.enabled.mechanisms": SASL_MECHANISM,
    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    ),
}

# Kafka reads PEM keystores itself (KIP-651): no keytool, no JKS or PKCS#12 conversion.
TLS_PROPERTIES: dict[str, str] = {"ssl.keystore.type": "PEM"}
# Listener names the nodes use themselves; an extra TLS listener takes another.
_RESERVED_LISTENERS = frozenset({"PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL", "CONTROLLER"})


def cluster_properties_for(controller_ports: Sequence[int]) -> dict[str, str]:
    """Return the settings shared by all nodes of a cluster with these controller ports."""
    voters = ",".join(f"{i}@{HOST}:{port}" for i, port in enumerate(controller_ports, start=1))
    props = {**SINGLE_NODE_PROPERTIES, "controller.quorum.voters": voters}
    size = len(controller_ports)
    if size == 1:
        return props
    replication = str(min(size, 3))
    min_isr = str(min(size, 3) - 1)
    props.update(
        {
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "unclean.leader.election.enable": "false",
            **FAST_FENCING_PROPERTIES,
        }
    )
    return props


def _render_properties(props: Mapping[str, str]) -> str:
    """Render a Java properties file (values here hold no backslash, so no escaping is needed)."""
    return "".join(f"{key}={value}\n" for key, value in props.items())
