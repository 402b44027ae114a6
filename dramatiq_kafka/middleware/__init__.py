"""Middleware the Kafka broker installs."""

from .boot import BootCheck
from .dispatch import DISPATCH_METHODS, DispatchOptions
from .headers import RecordHeaders
from .retries import PartitionRetries
from .revocation import Revocation, revoked

__all__ = [
    "DISPATCH_METHODS",
    "BootCheck",
    "DispatchOptions",
    "PartitionRetries",
    "RecordHeaders",
    "Revocation",
    "revoked",
]
