"""Middleware the Kafka broker installs."""

from .boot import BootCheck
from .dispatch import DISPATCH_METHODS, DispatchOptions

__all__ = ["DISPATCH_METHODS", "BootCheck", "DispatchOptions"]
