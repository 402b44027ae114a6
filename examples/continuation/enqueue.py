"""Enqueue a resumable import and wait until it is done."""

from __future__ import annotations

from .tasks import broker, import_file


def main() -> None:
    import_file.send("customers.csv", 10)
    broker.join("imports", timeout=120_000)
    print("customers.csv is imported.")
    broker.close()


if __name__ == "__main__":
    main()
