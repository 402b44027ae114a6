"""Options merge broker → queue → actor → GenericActor bases → message (no network)."""

from __future__ import annotations

import dramatiq
import pytest

from dramatiq_kafka import KafkaBroker, QueueConfig


@pytest.fixture
def broker() -> KafkaBroker:
    broker = KafkaBroker(
        bootstrap_servers="127.0.0.1:1",
        dispatch_method="sync",
        queues={"q": QueueConfig(partition_key="queue-key", sync_timeout=3)},
    )
    dramatiq.set_broker(broker)
    return broker


def test_each_level_overrides_only_what_it_sets(broker: KafkaBroker) -> None:
    @dramatiq.actor(queue_name="q", partition_key="actor-key")
    def keyed() -> None: ...

    @dramatiq.actor(queue_name="q")
    def plain() -> None: ...

    option = broker.dispatch.option
    assert option(broker, plain.message(), "dispatch_method") == "sync"  # broker
    assert option(broker, plain.message(), "partition_key") == "queue-key"  # queue
    assert option(broker, keyed.message(), "partition_key") == "actor-key"  # actor
    assert option(broker, keyed.message(), "sync_timeout") == 3  # queue, under an actor that set other things
    message = keyed.message_with_options(partition_key="message-key", dispatch_method="async")
    assert option(broker, message, "partition_key") == "message-key"  # message
    assert broker.dispatch.sync_timeout_for(broker, message) is None


def test_generic_actors_inherit_what_their_own_meta_leaves_unset(broker: KafkaBroker) -> None:
    class Base(dramatiq.GenericActor):
        class Meta:
            abstract = True
            queue_name = "q"
            dispatch_method = "async"
            partition_key = "base-key"

    class Middle(Base):
        class Meta:
            abstract = True
            partition_key = "middle-key"

    class Leaf(Middle):
        class Meta:
            sync_timeout = 7

        def perform(self) -> None: ...

    class Sibling(Base):
        class Meta:
            dispatch_method = "sync"

        def perform(self) -> None: ...

    assert {k: Leaf.options[k] for k in ("dispatch_method", "partition_key", "sync_timeout")} == {
        "dispatch_method": "async",
        "partition_key": "middle-key",
        "sync_timeout": 7,
    }
    assert (Sibling.options["dispatch_method"], Sibling.options["partition_key"]) == ("sync", "base-key")
    # Declaring subclasses changed no parent.
    assert (Base.Meta.dispatch_method, Base.Meta.partition_key) == ("async", "base-key")
    assert "sync_timeout" not in vars(Middle.Meta)
