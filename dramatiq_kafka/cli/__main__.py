"""``python -m dramatiq_kafka.cli``: the ``dramatiq-kafka`` command."""

import sys

from .run import main

sys.exit(main())
