"""Middleware the Kafka broker installs."""

from .boot import BootCheck
from .dispatch import DISPATCH_METHODS, DispatchOptions
from .headers import RecordHeaders

__all__ = ["DISPATCH_METHODS", "BootCheck", "DispatchOptions", "RecordHeaders"]
