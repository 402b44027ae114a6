"""The package's layout as a user imports it: every ``__all__`` holds, one error tree.

No Kafka: imports only (about a second).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import dramatiq_kafka
from dramatiq_kafka.errors import KafkaBrokerError

#: Errors that are not the broker's, each with why.
NOT_BROKER_ERRORS = {
    # Bad usage of the command line: becomes exit code 2, never reaches a program.
    "dramatiq_kafka.cli.exits.UsageError",
    # A BaseException on purpose, like KeyboardInterrupt: a job's own code must not catch it.
    "dramatiq_kafka.continuation.Interrupted",
    # Caught where raised: a malformed trace header is ignored.
    "dramatiq_kafka.middleware.context_headers.MalformedTrace",
    # The local Kafka tool runs without the package (python3 scripts/localkafka.py).
    "dramatiq_kafka.localkafka.LocalKafkaError",
    "dramatiq_kafka.localkafka.KafkaFetchError",
    "dramatiq_kafka.localkafka.KafkaStartError",
    "dramatiq_kafka.localkafka.KafkaExitedError",
}


def modules() -> list[str]:
    names = ["dramatiq_kafka"]
    for found in pkgutil.walk_packages(dramatiq_kafka.__path__, "dramatiq_kafka."):
        if not found.name.endswith("__main__"):  # runs the command
            names.append(found.name)
    return names


@pytest.mark.parametrize("name", modules())
def test_a_star_import_gives_every_name_of_all(name: str) -> None:
    module = importlib.import_module(name)
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    names = getattr(module, "__all__", None)
    if names is None:
        return
    assert len(set(names)) == len(names), f"{name}.__all__ repeats a name"
    assert not [n for n in names if n not in namespace], f"{name}.__all__ names what it lacks"


def test_every_error_of_the_package_is_a_kafka_broker_error() -> None:
    strays = []
    for name in modules():
        module: ModuleType = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if not (inspect.isclass(value) and issubclass(value, BaseException)):
                continue
            qualified = f"{value.__module__}.{value.__qualname__}"
            if value.__module__ != name or qualified in NOT_BROKER_ERRORS:
                continue
            if not issubclass(value, KafkaBrokerError):
                strays.append(f"{qualified} ({attribute})")
    assert strays == []


def test_a_connection_error_is_still_dramatiqs() -> None:
    from dramatiq.errors import BrokerConnectionError
    from dramatiq.middleware import MiddlewareError

    error = dramatiq_kafka.AuthenticationError("refused")
    assert isinstance(error, dramatiq_kafka.KafkaConnectionError)
    assert isinstance(error, KafkaBrokerError)
    assert isinstance(error, BrokerConnectionError) and isinstance(error, MiddlewareError)
