"""A task run every few seconds on a daemon thread of its own, for as long as a worker runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Periodic:
    """Runs ``task`` every ``interval`` seconds from :meth:`start` to :meth:`stop`; a task that
    raises is logged as a warning (``failure``, then the error) and runs again on time.

    Parameters:
      name(str): The thread's name.
      interval(float): Seconds between two runs.
      task(callable): What to run.
      logger: Where failures go.
      failure(str): What a failure means, for its log line.
      at_start(bool): Run once as soon as started, not only after the first interval.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        task: Callable[[], object],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        failure: str,
        *,
        at_start: bool = False,
    ) -> None:
        self.name = name
        self.interval = interval
        self.task = task
        self.logger = logger
        self.failure = failure
        self.at_start = at_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop, waiting up to ``timeout`` seconds for a run in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        if self.at_start or not self._stop.wait(self.interval):
            while True:
                try:
                    self.task()
                except Exception as e:
                    self.logger.warning("%s: %s", self.failure, e)
                if self._stop.wait(self.interval):
                    return
