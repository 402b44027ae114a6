"""What commands print: tables, JSON, and a progress bar on stderr."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TextIO


def print_table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def print_json(out: TextIO, data: object) -> None:
    out.write(json.dumps(data, indent=2) + "\n")


class ProgressBar:
    """A one-line progress bar, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str, *, enabled: bool, width: int = 30) -> None:
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self.width = width
        self._drawn_at = 0.0
        self._drawn = False

    def update(self, done: int, total: int, replayed: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        percent = 100 * done // total if total else 100
        line = f"\r{self.label} [{bar}] {percent:3d}% {done}/{total} examined, {replayed} replayed"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
