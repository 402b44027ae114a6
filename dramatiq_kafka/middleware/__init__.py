"""Middleware the Kafka broker installs.

One middleware a module: boot check, dispatch options, record headers,
partition retries, revocation; and ``context.py``, the ``CurrentContext``
middleware a user adds (exported by the package, not here).  The option
checks they use are ``options.py``'s; ``CurrentAttributes`` and
``TraceContext`` live outside, in ``current.py`` and ``tracecontext.py``.
"""

from .boot import BootCheck
from .dispatch import DispatchOptions
from .headers import RecordHeaders
from .retries import PartitionRetries
from .revocation import Revocation, revoked

__all__ = [
    "BootCheck",
    "DispatchOptions",
    "PartitionRetries",
    "RecordHeaders",
    "Revocation",
    "revoked",
]
