"""``TlsKeystores``: the PEM keystores of a node's TLS listeners, and their checks.

The ``ssl.*`` settings they become are made by ``KafkaNode`` (``node.py``); no certificate is made
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .properties import _RESERVED_LISTENERS


@dataclass(frozen=True)
class TlsKeystores:
    """The PEM keystores of a node's TLS listeners: each file holds an unencrypted PKCS#8 private key
    followed by the certificate chain (``ssl.keystore.type=PEM``). This module makes no certificate
    (it uses the standard library only); ``tests/certificates.py`` shows how with ``cryptography``.

    Parameters:
      keystore(Path): Served by the ``SSL`` listener, and by the ``SASL_SSL`` one when the node has
        SASL users.
      extra(Mapping[str, Path]): Listener name (``EXPIRED``) to keystore: one more ``SSL`` listener
        each, serving another certificate (an expired one, for a test).
    """

    keystore: Path
    extra: Mapping[str, Path] = field(default_factory=dict)

    def listener_names(self, sasl: bool) -> list[str]:
        """The TLS listeners of a node with (or without) SASL users, in port order."""
        return ["SSL", *(["SASL_SSL"] if sasl else []), *self.extra]

    def check(self) -> None:
        """Raise ``ValueError`` for a listener name Kafka would refuse or a keystore that is not there."""
        for name in self.extra:
            if name in _RESERVED_LISTENERS or not name.isidentifier() or not name.isupper():
                raise ValueError(
                    f"extra TLS listener {name!r}: use upper-case letters, digits and '_', not one of "
                    f"{sorted(_RESERVED_LISTENERS)}"
                )
        for path in (self.keystore, *self.extra.values()):
            if not Path(path).is_file():
                raise ValueError(f"TLS keystore {str(path)!r} is not a file")
