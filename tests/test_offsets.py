"""The committable watermark never passes an unfinished job."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka.offsets import (
    MAX_METADATA,
    PartitionOffsets,
    PartitionProgress,
    decode_progress,
    encode_progress,
)


@st.composite
def fetched_and_ack_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    # Offsets increase but may have gaps (compaction, transaction markers).
    gaps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60))
    start = draw(st.integers(min_value=0, max_value=1000))
    offsets = [start + sum(gaps[:i]) for i in range(len(gaps))]
    return offsets, draw(st.permutations(offsets))


@given(fetched_and_ack_order())
def test_watermark_never_passes_an_unacked_offset(case: tuple[list[int], list[int]]) -> None:
    fetched, acks = case
    offsets = PartitionOffsets()
    for offset in fetched:
        offsets.track(offset)

    acked: set[int] = set()
    for offset in acks:
        offsets.mark_done(offset)
        acked.add(offset)
        unacked = [o for o in fetched if o not in acked]
        if unacked:
            # Committing the watermark says "everything below is done".
            assert offsets.watermark <= min(unacked)
            assert offsets.unfinished == len(unacked)

    assert offsets.watermark == fetched[-1] + 1
    assert offsets.unfinished == 0


def test_acks_of_unknown_or_repeated_offsets_are_ignored() -> None:
    offsets = PartitionOffsets()
    offsets.track(5)
    offsets.track(6)
    assert not offsets.mark_done(4)
    assert offsets.mark_done(5)
    assert not offsets.mark_done(5)
    assert offsets.watermark == 6
    assert offsets.unfinished == 1


def test_offsets_must_be_tracked_in_order() -> None:
    offsets = PartitionOffsets()
    offsets.track(3)
    with pytest.raises(ValueError, match="out of order"):
        offsets.track(3)


def test_concurrent_acks_reach_the_end() -> None:
    offsets = PartitionOffsets()
    for offset in range(10_000):
        offsets.track(offset)

    def ack(start: int) -> None:
        for offset in range(start, 10_000, 8):
            offsets.mark_done(offset)

    threads = [threading.Thread(target=ack, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert offsets.watermark == 10_000
    assert offsets.unfinished == 0


@given(fetched_and_ack_order(), st.data())
def test_position_is_the_first_unfinished_offset_and_the_finished_past_it(
    case: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    fetched, acks = case
    offsets = PartitionOffsets()
    for offset in fetched:
        offsets.track(offset)
    done = set(acks[: data.draw(st.integers(min_value=0, max_value=len(acks)))])
    for offset in done:
        offsets.mark_done(offset)
    position = offsets.position()
    assert position is not None
    unfinished = [offset for offset in fetched if offset not in done]
    if unfinished:
        assert position == (unfinished[0], sorted(o for o in done if o > unfinished[0]))
    else:
        assert position == (fetched[-1] + 1, [])


@given(
    st.integers(0, 10**12),
    st.lists(st.integers(1, 5000), unique=True, max_size=300),
    st.dictionaries(st.integers(0, 5000), st.integers(1, 50), max_size=30),
)
def test_progress_in_commit_metadata_reads_back_within_kafkas_bound(
    offset: int, done_past: list[int], failures: dict[int, int]
) -> None:
    progress = PartitionProgress(
        offset, tuple(sorted(offset + d for d in done_past)), {offset + o: n for o, n in failures.items()}
    )
    text = encode_progress(progress)
    assert len(text) <= MAX_METADATA
    read = decode_progress(offset, text)
    assert read == progress


def test_progress_too_long_for_the_metadata_keeps_its_lowest_offsets() -> None:
    done = tuple(sorted(random.Random(3).sample(range(10, 40_000), 15_000)))  # incompressible
    failures = {o: 1 for o in range(1, 5000, 7)}
    read = decode_progress(0, encode_progress(PartitionProgress(0, done, failures), limit=600))
    assert 0 < len(read.done) < len(done) and read.done == done[: len(read.done)]
    assert 0 < len(read.failures) < len(failures) and min(read.failures) == 1


def test_progress_of_other_writers_and_earlier_versions() -> None:
    assert decode_progress(7, None) == PartitionProgress(7)
    assert decode_progress(7, "written by another tool") == PartitionProgress(7)
    # What the delay consumers of 0.1 committed: the records moved past the offset.
    assert decode_progress(7, "dramatiq-kafka-moved:9-10,12") == PartitionProgress(7, (9, 10, 12))
    with pytest.raises(ValueError, match="not a failure count: 'x'"):
        decode_progress(7, "dramatiq-kafka-done:9;f=x")
