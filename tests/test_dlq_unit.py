"""Pure logic of dead-letter replays and the test helpers: no Kafka."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka import localkafka, testing
from dramatiq_kafka.cli import parse_offsets
from dramatiq_kafka.dead_letters import MAX_METADATA
from dramatiq_kafka.dead_letters.replay import _PartitionReplay
from dramatiq_kafka.offsets import (
    decode_done_past,
    decode_offsets,
    encode_done_past,
    encode_done_past_within,
    encode_offsets,
)


@given(st.sets(st.integers(min_value=0, max_value=10_000)))
def test_offsets_survive_their_encoding(offsets: set[int]) -> None:
    text = encode_offsets(sorted(offsets))
    assert decode_offsets(text) == offsets
    assert len(text.split(",")) <= max(1, len(offsets))


@given(st.integers(min_value=-1, max_value=10**9), st.sets(st.integers(min_value=1, max_value=5000)))
def test_replayed_offsets_survive_their_encoding(committed: int, distances: set[int]) -> None:
    offsets = sorted(committed + distance for distance in distances)
    assert decode_done_past(committed, encode_done_past(committed, offsets)) == set(offsets)


def test_interleaved_offsets_take_a_bitmap() -> None:
    # What a replay filtered by one of two alternating actors leaves: 10,000 islands.
    offsets = list(range(1, 20_000, 2))
    text = encode_done_past(0, offsets)
    assert text.startswith("z:") and len(text) < 200 < MAX_METADATA < len(encode_offsets(offsets))
    assert decode_done_past(0, text) == set(offsets)
    with pytest.raises(ValueError, match="not an offset bitmap"):
        decode_done_past(0, "z:???")


def test_commit_metadata_keeps_the_lowest_offsets_that_fit() -> None:
    # Islands neither ranges nor a bitmap pack small: sparse offsets at random gaps.
    offsets = sorted(random.Random(1).sample(range(1, 10**7), 5000))
    text, listed = encode_done_past_within(0, offsets, limit=MAX_METADATA)
    assert len(text) <= MAX_METADATA and 0 < listed < len(offsets)
    assert decode_done_past(0, text) == set(offsets[:listed])
    assert encode_done_past_within(0, offsets[:10]) == (encode_done_past(0, offsets[:10]), 10)


def test_offsets_are_ranges() -> None:
    assert encode_offsets([5, 6, 7, 9, 11, 12]) == "5-7,9,11-12"
    with pytest.raises(ValueError, match="not an offset range: 'x'"):
        decode_offsets("1-2,x")


def test_commit_point_stops_at_the_first_record_left() -> None:
    state = _PartitionReplay(start=10, stop=20, left=[13, 17])
    assert state.commit_point() == (13, [14, 15, 16, 18, 19])
    assert _PartitionReplay(start=10, stop=20).commit_point() == (20, [])


def test_parse_offsets() -> None:
    assert parse_offsets("3-9") == (3, 9)
    assert parse_offsets("3-") == (3, None)
    assert parse_offsets("-9") == (None, 9)
    assert parse_offsets("4") == (4, 4)


def test_no_kafka_and_no_java_nor_maven_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    monkeypatch.setattr(localkafka, "LIBS_DIR", tmp_path / "no-jars-yet")
    with pytest.raises(pytest.UsageError) as raised:
        with testing.local_kafka():
            pass
    message = str(raised.value)
    assert "set $DRAMATIQ_KAFKA_BOOTSTRAP_SERVERS" in message
    assert "java not found: install Java 17+ or set JAVA_HOME" in message
    assert "mvn not found on PATH: install Maven" in message


def test_the_launcher_and_its_pom_are_in_the_package() -> None:
    assert localkafka.POM.is_file() and localkafka.POM.parent == Path(testing.__file__).parent
