"""Middleware the Kafka broker installs."""

from .boot import BootCheck
from .dispatch import DispatchOptions
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
