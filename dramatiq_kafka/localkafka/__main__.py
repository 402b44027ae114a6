"""``python -m dramatiq_kafka.localkafka``: the local Kafka's command line (``command.py``)."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
