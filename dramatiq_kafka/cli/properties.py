"""Reading a librdkafka settings file (``--config``) in Java's ``.properties`` syntax.

Nothing here talks to Kafka; the settings are merged with the others in
``connection.py``.  Errors name the file, the line and the key, never a
value (it may be a password).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .exits import UsageError

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Java's ``Properties.load`` lines: a line ending in an odd number of
    backslashes goes on with the next one, whose leading whitespace is
    dropped; comment and blank lines are skipped.  Yields the first line's
    number and the joined text."""
    pending: str | None = None
    first = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(" \t\f")
        if pending is None:
            if not line or line.startswith(("#", "!")):
                continue
            first = number
        trailing = len(line) - len(line.rstrip("\\"))
        continued = trailing % 2 == 1
        piece = line[:-1] if continued else line
        pending = piece if pending is None else pending + piece
        if not continued:
            yield first, pending
            pending = None
    if pending is not None:
        yield first, pending


def _unescape(text: str, where: str) -> str:
    out = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        code = text[i + 1]
        if code == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise UsageError(f"{where}: malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            out.append(_ESCAPES.get(code, code))
            i += 2
    return "".join(out)


def parse_properties(text: str, source: str = "config") -> dict[str, str]:
    """Settings in Java's ``.properties`` syntax, as ``Properties.load`` reads them.

    ``key=value``, ``key: value`` and ``key value`` (the key ends at the first
    unescaped ``=``, ``:`` or whitespace); ``#`` and ``!`` comments; a
    trailing backslash continues a line; ``\\t``, ``\\n``, ``\\uXXXX`` escapes.

    Raises:
      UsageError: Naming the file, the line and the key, never a value
        (it may be a password).
    """
    properties = {}
    for number, line in _logical_lines(text):
        end = 0
        while end < len(line) and line[end] not in "=: \t\f":
            end += 2 if line[end] == "\\" else 1
        raw_key = line[:end]
        rest = line[end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        key = _unescape(raw_key, f"{source}:{number}").strip()
        if not key:
            raise UsageError(f"{source}:{number}: a setting without a key")
        properties[key] = _unescape(rest, f"{source}:{number}: the value of {key!r}")
    return properties


def read_properties(path: str) -> dict[str, str]:
    """A librdkafka properties file, in Java's ``.properties`` syntax (see
    :func:`parse_properties`).

    Raises:
      UsageError: When the file cannot be read or a line cannot be parsed;
        the message never shows a value.
    """
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"Cannot read the config file {path!r}: {e.strerror}") from None
    return parse_properties(text, path)
